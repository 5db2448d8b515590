"""What Limen says about itself: the methods it handles (Allow), the bodies it accepts,
and its answer to an OPTIONS addressed to it (RFC 3261 §11.2).

Choice of 405 vs 501 (applied by :func:`limen.sip.validate.check_request`): ``Allow``
lists the methods Limen is built to handle as a teleworker gateway. A method known to SIP
but outside that list (PUBLISH) gets 405 with Allow; a method nobody defined gets 501
with Allow (RFC 3261 §21.5.2 / RFC 4475 §3.1.1.2).
"""

from __future__ import annotations

from collections.abc import Iterable

# The methods a teleworker gateway handles (advertised in Allow).
ALLOWED_METHODS: frozenset[str] = frozenset(
    {
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "REGISTER",
        "PRACK",
        "UPDATE",
        "INFO",
        "MESSAGE",
        "REFER",
        "SUBSCRIBE",
        "NOTIFY",
    }
)
# Option tags Limen implements (Supported, and what Require may ask for). None yet: a
# Require naming any extension gets 420 (RFC 3261 §8.2.2.3).
SUPPORTED: frozenset[str] = frozenset()
ACCEPT = "application/sdp"
ACCEPT_ENCODING = "identity"
ACCEPT_LANGUAGE = "en"
# The order methods are listed in Allow: the core ones first, as phones show them.
_ALLOW_ORDER = (
    "INVITE",
    "ACK",
    "CANCEL",
    "BYE",
    "OPTIONS",
    "REGISTER",
    "PRACK",
    "UPDATE",
    "INFO",
    "MESSAGE",
    "REFER",
    "SUBSCRIBE",
    "NOTIFY",
    "PUBLISH",
)


def allow_header(methods: Iterable[str]) -> str:
    wanted = set(methods)
    ordered = [m for m in _ALLOW_ORDER if m in wanted]
    return ", ".join(ordered + sorted(wanted - set(ordered)))


def capabilities(supported: Iterable[str] = SUPPORTED) -> list[tuple[str, str]]:
    """RFC 3261 §11.2: what Limen's own OPTIONS answer describes."""
    return [
        ("Allow", allow_header(ALLOWED_METHODS)),
        ("Accept", ACCEPT),
        ("Accept-Encoding", ACCEPT_ENCODING),
        ("Accept-Language", ACCEPT_LANGUAGE),
        ("Supported", ", ".join(sorted(supported))),
    ]
