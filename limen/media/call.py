"""A relayed call and its offer/answer processing (RFC 3264, RFC 4568), sans-IO.

Object model (rtpengine's call → monologue → media → stream): a :class:`MediaCall` has two
:class:`Leg` objects (one per side), each with one :class:`~limen.media.stream.Endpoint`
per ``m=`` line; endpoint ``i`` of one leg is the peer of endpoint ``i`` of the other.

:func:`apply_offer` takes the SDP one leg offered and returns the SDP to offer the other
leg; :func:`apply_answer` takes the answer and returns the SDP to answer the offerer. Ports
come from an ``allocate`` callback (the relay binds sockets there), so everything here runs
without I/O.

What goes toward a leg names only that leg's address (``c=``), our ports, our ``o=`` line
(:class:`limen.sdp.LocalOrigin` per leg), and our own SDES keys: the keys a leg sent us are
used only to decrypt what it sends (RFC 4568 §6.1: each side keys what it sends), never
written toward the other leg. ICE and DTLS attributes are removed (the relay is the only
media address; SDES only). ``m=`` lines that are not RTP (T.38 over UDPTL, say) are
rejected toward the other leg with port 0 (not relayed yet).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from limen.media.errors import MediaRefused
from limen.media.policy import LegPolicy, LegSpec, Security
from limen.media.stream import Activity, Endpoint
from limen.sdp import (
    CryptoAttribute,
    LocalOrigin,
    MediaDescription,
    SessionDescription,
    accepted_crypto,
    choose_crypto,
    generate_crypto,
    is_session_on_hold,
    offer_crypto,
)

log = logging.getLogger("limen.media")

Allocate = Callable[["Leg", int], Endpoint]
Release = Callable[[Endpoint], None]


@dataclass
class Leg:
    """One side of a call: its spec, policy, ``o=`` line and endpoints (by m= index)."""

    spec: LegSpec
    policy: LegPolicy
    origin: LocalOrigin
    endpoints: list[Endpoint | None] = field(default_factory=list)
    held: bool = False
    # The peer refused our SRTP offer (the signalling side retried ``plain``): later offers
    # toward it (hold, resume, re-INVITEs) stay plain RTP/AVP.
    plain: bool = False

    @property
    def name(self) -> str:
        return self.spec.name

    def endpoint(self, index: int) -> Endpoint | None:
        return self.endpoints[index] if index < len(self.endpoints) else None


@dataclass
class PendingOffer:
    """The last offer: who made it, and per m= line what was offered."""

    from_leg: str
    protos: list[str]  # the offerer's protocol per m= line (the answer mirrors it)
    relayed: list[bool]


@dataclass
class MediaCall:
    call_id: str
    legs: dict[str, Leg]
    activity: Activity
    offer: PendingOffer | None = None
    answered: bool = False
    timed_out: bool = False

    @property
    def held(self) -> bool:
        return any(leg.held for leg in self.legs.values())

    def other(self, leg: str) -> Leg:
        return next(other for name, other in self.legs.items() if name != leg)

    def endpoints(self) -> list[Endpoint]:
        return [ep for leg in self.legs.values() for ep in leg.endpoints if ep is not None]


def allowed_codecs(*policies: LegPolicy) -> tuple[str, ...] | None:
    """The codecs both legs allow (None: unrestricted). We do not transcode, so a codec one
    leg may not use cannot be used on the other either."""
    keep: tuple[str, ...] | None = None
    for policy in policies:
        if policy.codecs is None:
            continue
        if keep is None:
            keep = policy.codecs
        else:
            wanted = {c.upper() for c in policy.codecs}
            keep = tuple(c for c in keep if c.upper() in wanted)
    return keep


def _remote(sd: SessionDescription, media: MediaDescription) -> tuple[str | None, int, int | None]:
    connection = sd.effective_connection(media)
    host = connection.address if connection is not None else None
    rtcp = media.rtcp
    rtcp_port = rtcp.port if rtcp is not None else None
    return host, media.port, rtcp_port


def _learn_codecs(endpoint: Endpoint, media: MediaDescription) -> None:
    codecs = media.codecs
    endpoint.clock_rates = {
        c.payload_type: 0 if c.is_telephone_event else c.clock_rate for c in codecs
    }
    main = next((c for c in codecs if not (c.is_telephone_event or c.is_comfort_noise)), None)
    if main is not None:
        endpoint.codec = main.name
    if media.ptime:
        endpoint.ptime = media.ptime


def _reject(media: MediaDescription) -> None:
    media.port = 0
    media.remove_attributes("crypto")
    media.remove_attributes("rtcp-mux")


def _finish(out: SessionDescription, leg: Leg) -> SessionDescription:
    out.strip_ice()
    out.strip_dtls()
    out.set_connection_address(leg.spec.address)
    leg.origin.stamp(out)
    return out


def _write_stream(
    out: MediaDescription, source: SessionDescription, original: MediaDescription, port: int
) -> None:
    """Point one m= line at us; keep its direction explicit if the writer used c=0.0.0.0."""
    connection = source.effective_connection(original)
    if connection is not None and connection.is_unspecified:
        out.direction = source.effective_direction(original)
    out.connection = None
    out.port = port
    out.rtcp = None


def _our_offer_crypto(endpoint: Endpoint, policy: LegPolicy) -> list[CryptoAttribute]:
    """One key per suite, the same as last time if we offered these suites before, and the
    key in use kept for its suite: a re-INVITE does not re-key (nor change our SDP)."""
    offered = endpoint.crypto_offered
    if [attr.suite for attr in offered] != [suite.value for suite in policy.suites]:
        offered = offer_crypto(policy.suites)
    current = endpoint.crypto_out
    if current is None:
        return offered
    return [
        CryptoAttribute.create(attr.tag, suite, current.key_salt)
        if (suite := attr.crypto_suite) is not None and attr.suite == current.suite
        else attr
        for attr in offered
    ]


def apply_offer(
    call: MediaCall,
    from_leg: str,
    offer: SessionDescription,
    *,
    plain: bool,
    allocate: Allocate,
    release: Release,
    available: int,
) -> SessionDescription:
    """Process ``offer`` from ``from_leg``; return the offer for the other leg.

    ``available``: port pairs the allocator has left (checked before allocating any).
    Raises :class:`MediaRefused` (488, 503) before changing anything, except that endpoints
    allocated for new m= lines are released again on failure.
    """
    a, b = call.legs[from_leg], call.other(from_leg)
    keep = allowed_codecs(a.policy, b.policy)
    # Phase 1: decide, without side effects.
    relayed: list[bool] = []
    filtered: list[MediaDescription] = []
    chosen: list[CryptoAttribute | None] = []
    for media in offer.media:
        copy = media.copy()
        ok = media.is_rtp and not media.rejected
        if ok and keep is not None and not copy.filter_codecs(keep):
            ok = False
        crypto = None
        if ok and media.secure:
            crypto = choose_crypto(media.crypto, a.policy.suites)
            if crypto is None:
                raise MediaRefused(488, "SRTP offered without a usable SDES key")
        elif ok and a.policy.security is Security.REQUIRE:
            raise MediaRefused(488, "SRTP required")
        relayed.append(ok)
        filtered.append(copy)
        chosen.append(crypto)
    if not any(relayed):
        if keep is not None and any(m.is_rtp and not m.rejected for m in offer.media):
            raise MediaRefused(488, "no allowed codec offered")
        raise MediaRefused(488, "no RTP stream to relay")
    # Phase 2: allocate endpoints for new m= lines (all or nothing).
    needed = sum(1 for i, ok in enumerate(relayed) if ok and a.endpoint(i) is None)
    if 2 * needed > available:
        raise MediaRefused(503, "no media ports left")
    new: list[Endpoint] = []
    try:
        for index, ok in enumerate(relayed):
            if not ok or a.endpoint(index) is not None:
                continue
            for leg in (a, b):
                endpoint = allocate(leg, index)
                new.append(endpoint)
                while len(leg.endpoints) <= index:
                    leg.endpoints.append(None)
                leg.endpoints[index] = endpoint
            ea, eb = a.endpoints[index], b.endpoints[index]
            assert ea is not None and eb is not None
            ea.peer, eb.peer = eb, ea
    except MediaRefused:
        for endpoint in new:
            for leg in (a, b):
                if endpoint in leg.endpoints:
                    leg.endpoints[leg.endpoints.index(endpoint)] = None
            release(endpoint)
        raise
    # Phase 3: apply.
    out = offer.copy()
    if plain:
        b.plain = True
    secure_toward_b = not b.plain and b.policy.security is not Security.OFF
    for index, media in enumerate(offer.media):
        target = out.media[index]
        ea, eb = a.endpoint(index), b.endpoint(index)
        if not relayed[index] or ea is None or eb is None:
            _reject(target)
            continue
        ea.rejected = eb.rejected = False
        ea.peer_host, eb.peer_host = a.policy.peer, b.policy.peer
        ea.set_remote(*_remote(offer, media))
        ea.rtcp_mux = media.rtcp_mux
        _learn_codecs(ea, media)
        crypto = chosen[index]
        if crypto is None:
            ea.set_srtp_in(None)
            ea.set_srtp_out(None)
        else:
            suite = crypto.crypto_suite
            assert suite is not None
            current = ea.crypto_out
            ours = (
                CryptoAttribute.create(crypto.tag, suite, current.key_salt)
                if current is not None and current.suite == crypto.suite
                else generate_crypto(crypto.tag, suite)
            )
            ea.set_srtp_in(crypto)
            ea.set_srtp_out(ours)
        target.lines[:] = filtered[index].lines
        _write_stream(target, offer, media, eb.port)
        if secure_toward_b:
            eb.crypto_offered = _our_offer_crypto(eb, b.policy)
            target.set_secure(True)
        else:
            eb.crypto_offered = []
            target.set_secure(False)
        target.crypto = eb.crypto_offered
    a.held = is_session_on_hold(offer)
    call.offer = PendingOffer(from_leg, [m.proto for m in offer.media], relayed)
    call.answered = False
    return _finish(out, b)


def apply_answer(
    call: MediaCall, from_leg: str, answer: SessionDescription, *, now: float
) -> SessionDescription:
    """Process the answer from ``from_leg`` to the pending offer; return the answer for the
    offerer. Can be applied more than once (provisional and final answers)."""
    pending = call.offer
    if pending is None or pending.from_leg == from_leg:
        raise MediaRefused(488, "answer without an offer")
    if len(answer.media) != len(pending.protos):
        raise MediaRefused(488, "answer does not match the offer's m= lines")
    b, a = call.legs[from_leg], call.legs[pending.from_leg]
    # Phase 1: check the SRTP outcome of every stream before changing anything.
    accepted: list[tuple[CryptoAttribute, CryptoAttribute] | None] = []
    for index, media in enumerate(answer.media):
        eb = b.endpoint(index)
        match = None
        if pending.relayed[index] and eb is not None and not media.rejected:
            if media.secure:
                match = accepted_crypto(eb.crypto_offered, media.crypto)
                if match is None:
                    raise MediaRefused(488, "SRTP answer does not match our offer")
            elif eb.crypto_offered and b.policy.security is Security.REQUIRE:
                raise MediaRefused(488, "SRTP required")
        accepted.append(match)
    out = answer.copy()
    for index, media in enumerate(answer.media):
        target = out.media[index]
        ea, eb = a.endpoint(index), b.endpoint(index)
        if not pending.relayed[index] or ea is None or eb is None or media.rejected:
            if ea is not None and eb is not None:
                ea.rejected = eb.rejected = True
            _reject(target)
            continue
        ea.peer_host, eb.peer_host = a.policy.peer, b.policy.peer
        eb.set_remote(*_remote(answer, media))
        eb.rtcp_mux = media.rtcp_mux
        _learn_codecs(eb, media)
        _learn_codecs(ea, media)
        match = accepted[index]
        if match is None:
            eb.set_srtp_in(None)
            eb.set_srtp_out(None)
        else:
            ours, theirs = match
            eb.set_srtp_in(theirs)
            eb.set_srtp_out(ours)
        _write_stream(target, answer, media, ea.port)
        target.proto = pending.protos[index]
        target.crypto = [ea.crypto_out] if ea.crypto_out is not None else []
        target.rtcp_mux = ea.rtcp_mux
    b.held = is_session_on_hold(answer)
    call.answered = True
    call.activity.last = max(call.activity.last, now)  # the timeout counts from the answer
    return _finish(out, a)


def release_all(call: MediaCall, release: Release) -> None:
    for leg in call.legs.values():
        for endpoint in leg.endpoints:
            if endpoint is not None:
                endpoint.peer = None
                release(endpoint)
        leg.endpoints.clear()


def stream_stats(call: MediaCall) -> dict[str, object]:
    legs: dict[str, object] = {}
    packets = bytes_ = errors = 0
    for name, leg in call.legs.items():
        streams = [ep.stats() for ep in leg.endpoints if ep is not None]
        for stream in streams:
            packets += int(stream["packets"])
            bytes_ += int(stream["bytes"])
            dropped = stream["dropped"]
            assert isinstance(dropped, dict)
            errors += sum(v for k, v in dropped.items() if k.startswith("srtp"))
        legs[name] = {"streams": streams, "held": leg.held}
    return {
        "call_id": call.call_id,
        "answered": call.answered,
        "held": call.held,
        "legs": legs,
        "totals": {"packets": packets, "bytes": bytes_, "srtp_errors": errors},
    }


def new_call(
    call_id: str, specs: Sequence[LegSpec], policy: dict[str, LegPolicy], now: float
) -> MediaCall:
    legs = {
        spec.name: Leg(spec, policy.get(spec.name, spec.policy), LocalOrigin(spec.address))
        for spec in specs
    }
    return MediaCall(call_id, legs, Activity(now))
