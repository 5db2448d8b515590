"""Answering a PBX's digest challenge to a request a call sent on its ICP leg.

The digest state (which challenge, which nonces were answered, nonce counts, rounds) is
the sans-IO :class:`~limen.sip.digest.DigestClient` that upstream registration uses too;
this module only builds the retried request (``Request.retry``: CSeq above the dialog's,
a fresh Via).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from limen.sip.digest import DigestClient
from limen.sip.message import Request, Response

if TYPE_CHECKING:
    from limen.gateway.legs import Forward
    from limen.sip.headers import Via

MAX_AUTH_ROUNDS: Final = 2  # ICP challenges answered per request (a new nonce each time)


def next_seq(forward: Forward) -> int:
    """The CSeq of a request sent again on ``forward``'s target leg: above ours and above
    the dialog's local sequence, which it then becomes (§12.2.1.1)."""
    seq = forward.out.cseq.seq + 1
    dialog = forward.target_leg.dialog
    if dialog is not None and dialog.local_seq is not None:
        seq = max(seq, dialog.local_seq + 1)
        dialog.local_seq = seq
    return seq


def answer_icp_challenge(forward: Forward, response: Response, via: Via) -> Request | None:
    """The request of ``forward`` again, answering the 401/407 ``response`` with the
    device's ICP-side credentials: once per nonce, at most MAX_AUTH_ROUNDS times per
    request (§22.2, RFC 7616 §3.3 stale). None: not answered (the caller gets the
    failure)."""
    if forward.auth is None:
        device = forward.call.device
        forward.auth = DigestClient(
            device.icpside_username, device.icpside_password, max_rounds=MAX_AUTH_ROUNDS
        )
    if not forward.auth.on_challenge(response):
        return None
    out = forward.out
    answer = forward.auth.authorization(out.method, str(out.uri), out.body)
    if answer is None:  # on_challenge has just taken one: cannot happen
        return None
    retry = out.retry(via, seq=next_seq(forward))
    retry.remove(answer.name)
    retry.add(answer.name, answer.value)
    return retry


__all__ = ["MAX_AUTH_ROUNDS", "answer_icp_challenge", "next_seq"]
