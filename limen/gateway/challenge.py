"""Answering a PBX's digest challenge to a request a call sent on its ICP leg.

One function, :func:`answer_icp_challenge`, kept apart from the call controller so that it
can be replaced as a whole by the sans-IO digest client (issue 13: "a sans-IO digest
client used by upstream registration and by calls", with ``Request.retry`` for the CSeq
bump and the new Via).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from limen.sip.digest import answer_challenge, format_credentials, select_challenge
from limen.sip.message import Request, Response

if TYPE_CHECKING:
    from limen.gateway.legs import Forward
    from limen.sip.headers import Via

MAX_AUTH_ROUNDS: Final = 2  # ICP challenges answered per request (a new nonce each time)


def answer_icp_challenge(forward: Forward, response: Response, via: Via) -> Request | None:
    """The request of ``forward`` again, answering the 401/407 ``response`` with the
    device's ICP-side credentials: once per nonce, at most MAX_AUTH_ROUNDS times per
    request (§22.2, RFC 7616 §3.3 stale). None: not answered (the caller gets the
    failure). Updates ``forward``'s auth state and the target dialog's CSeq."""
    challenges = (
        response.proxy_authenticate if response.status == 407 else response.www_authenticate
    )
    challenge = select_challenge(challenges)
    if challenge is None or forward.auth_rounds >= MAX_AUTH_ROUNDS:
        return None
    if challenge.nonce in forward.answered_nonces and not challenge.stale:
        return None
    device = forward.call.device
    out = forward.out
    seq = out.cseq.seq + 1
    dialog = forward.target_leg.dialog
    if dialog is not None and dialog.local_seq is not None:
        seq = max(seq, dialog.local_seq + 1)
        dialog.local_seq = seq
    retry = out.copy()
    retry.set("CSeq", f"{seq} {out.method}")
    retry.set("Via", via)
    credentials = answer_challenge(
        challenge,
        method=out.method,
        uri=str(out.uri),
        username=device.icpside_username,
        password=device.icpside_password,
        body=out.body,
    )
    header = "Proxy-Authorization" if response.status == 407 else "Authorization"
    retry.remove(header)
    retry.add(header, format_credentials(credentials))
    forward.auth_rounds += 1
    forward.answered_nonces.add(challenge.nonce)
    return retry


__all__ = ["MAX_AUTH_ROUNDS", "answer_icp_challenge"]
