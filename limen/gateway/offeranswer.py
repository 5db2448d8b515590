"""RFC 3264 offer/answer of one call, on the gateway side: one owner of the pending offer.

Each call has one :class:`OfferAnswer`. It alone knows which side's offer awaits an
answer (``pending``), and it alone calls the media controller (``ctx.media``: offer,
answer, the plain re-offer, delete). The call controller asks it:

- :meth:`OfferAnswer.glare`: may an offer from this side go now? No while an offer is
  pending, or while a re-INVITE is in progress: 491 (RFC 3261 §14.2, RFC 3311 §5.2,
  RFC 6337 §3.1);
- :meth:`OfferAnswer.request`: the SDP of a request (offer or answer, by what is pending);
- :meth:`OfferAnswer.response`: the SDP of a 101-299 (the answer to the request's offer,
  or a late offer when the INVITE had none: its answer comes in the ACK or PRACK);
- :meth:`OfferAnswer.ack`: the SDP answer in the caller's ACK to a late offer;
- :meth:`OfferAnswer.withdrawn` when an offer's transaction failed (no answer comes);
- :meth:`OfferAnswer.plain`: our SRTP offer refused, the same offer as plain RTP/AVP.

A :class:`~limen.gateway.media.MediaRefused` from the media side propagates from
:meth:`request` (its status answers the request); elsewhere it is logged and the SDP
dropped, as a response or an ACK cannot be refused.
"""

from __future__ import annotations

import logging

from limen.gateway.context import Side
from limen.gateway.media import MediaController, MediaRefused

log = logging.getLogger("limen.gateway.calls")


class OfferAnswer:
    """The offer/answer state of one call (``pending``: the side whose offer is out)."""

    __slots__ = ("device", "key", "media", "peer", "pending")

    def __init__(self, media: MediaController, key: str, device: str) -> None:
        self.media = media
        self.key = key  # the call's key: the media session's id
        self.device = device  # the device guid (its media policy)
        self.peer: str | None = None  # the phone's signalling host (where RTP may latch)
        self.pending: Side | None = None

    def glare(self, method: str, reinvite_pending: bool) -> bool:
        """An offer now would cross one in progress (answer 491 with Retry-After)."""
        return self.pending is not None or (method == "INVITE" and reinvite_pending)

    def request(self, side: Side, sdp: bytes) -> tuple[bytes, bool]:
        """The SDP of a request from ``side``: the answer to the other side's pending
        offer, else a new offer. Returns (body for the other leg, it is an offer).
        Raises MediaRefused."""
        if self.pending is not None and self.pending is not side:
            body = self.media.answer(self.key, side, sdp, device=self.device)
            self.pending = None
            return body, False
        body = self.media.offer(self.key, side, sdp, device=self.device, peer=self.peer)
        self.pending = side
        return body, True

    def response(self, side: Side, sdp: bytes, *, offered: bool, settles: bool) -> bytes:
        """The SDP of a 101-299 from ``side``. ``offered``: the request carried our offer
        (this is its answer); else it is a late offer. ``settles``: a final or reliable
        provisional response (RFC 3262 §5: the answer is then the answer)."""
        try:
            if offered:
                body = self.media.answer(self.key, side, sdp, device=self.device)
                if settles:
                    self.pending = None
                return body
            body = self.media.offer(self.key, side, sdp, device=self.device, peer=self.peer)
            self.pending = side
            return body
        except MediaRefused as exc:
            log.warning("[%s] media refused the session: %s", self.key, exc.reason)
            return b""

    def no_sdp(self, side: Side, *, offered: bool) -> None:
        """A final 2xx from ``side`` without SDP: an offer of the request that was not
        answered there is not pending any more."""
        if offered and self.pending is not side:
            self.pending = None

    def ack(self, offerer: Side, answerer: Side, sdp: bytes) -> bytes:
        """The answer in the caller's ACK to ``offerer``'s late offer (b"": none)."""
        if self.pending is not offerer:
            return b""
        try:
            body = self.media.answer(self.key, answerer, sdp, device=self.device)
        except MediaRefused:
            body = b""
        self.pending = None
        return body

    def withdrawn(self) -> None:
        """The transaction of the pending offer failed: no answer will come."""
        self.pending = None

    def plain(self, side: Side, sdp: bytes) -> bytes | None:
        """Our SRTP offer from ``side`` was refused (488/606): the same media offered as
        plain RTP/AVP, or None (no relay, or the policy requires SRTP)."""
        if not self.media.relays:
            return None
        try:
            return self.media.offer(
                self.key, side, sdp, device=self.device, plain=True, peer=self.peer
            )
        except MediaRefused:
            return None

    def delete(self) -> None:
        try:
            self.media.delete(self.key)
        except Exception:  # the relay's failure must not keep the call alive
            log.exception("[%s] media delete failed", self.key)


__all__ = ["OfferAnswer"]
