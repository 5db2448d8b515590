"""Request checks a UAS makes before acting on a request (RFC 3261 §8.2.1-§8.2.3, §16.3).

``parse_message`` already refused what is malformed. What remains here needs context: which
methods and extensions this element supports, which URI schemes and bodies it accepts.
The order is RFC 3261 §8.2's: method (405/501), then headers (416, 483), then extensions
(420), then content (415, 406). The result is a :class:`Rejection` to answer with, or None.
The RFC 4475 §3.3 "semantically bad" messages map here (see tests/sip/test_conformance.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from limen.sip.errors import SipParseError
from limen.sip.message import KNOWN_METHOD_NAMES, Request, reason_phrase
from limen.sip.uri import SipUri

# Methods of RFC 3261 and the extensions an SBC meets (RFC 3262, 3311, 3428, 3515,
# 3903, 6086, 6665). A method outside this set is unknown: 501, not 405 (§21.5.2).
KNOWN_METHODS: frozenset[str] = KNOWN_METHOD_NAMES

SESSION_METHODS = frozenset({"INVITE", "UPDATE", "PRACK", "ACK"})
DEFAULT_CONTENT_TYPES = frozenset({"application/sdp"})
ACCEPTED_URI_SCHEMES = frozenset({"sip", "sips", "tel"})


@dataclass(frozen=True, slots=True)
class Rejection:
    """A final response to send instead of processing the request."""

    status: int
    reason: str
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, status: int, *headers: tuple[str, str], reason: str | None = None) -> Rejection:
        return cls(status, reason or reason_phrase(status), tuple(headers))


def check_request(
    request: Request,
    *,
    supported: frozenset[str] = frozenset(),
    allowed_methods: frozenset[str] = KNOWN_METHODS,
    proxy: bool = False,
    content_types: frozenset[str] = DEFAULT_CONTENT_TYPES,
) -> Rejection | None:
    """Return the response a UAS (or, with ``proxy``, a proxy) must give, or None.

    ``supported`` are the option tags this element implements (compared case-
    insensitively); ``allowed_methods`` the methods it handles here.
    """
    try:
        return _check(request, supported, allowed_methods, proxy, content_types)
    except SipParseError as exc:
        # A header we only look at here (Require, Accept ...) is malformed.
        return Rejection.of(exc.status, reason=exc.reason if exc.status == 400 else None)


def _check(
    request: Request,
    supported: frozenset[str],
    allowed_methods: frozenset[str],
    proxy: bool,
    content_types: frozenset[str],
) -> Rejection | None:
    method = request.method
    allow = ("Allow", ", ".join(sorted(allowed_methods)))
    # Contact is parsed on demand, not by parse_message: a malformed one is a 400 here
    # (RFC 4475 §3.1.2.1, §3.1.2.13). The other core headers were checked at parse time.
    if request.has("contact"):
        request.contacts  # noqa: B018
    # §8.2.1: method inspection. ACK is never answered.
    if method not in allowed_methods and method != "ACK":
        return Rejection.of(405 if method in KNOWN_METHODS else 501, allow)

    # §8.2.2.1: Request-URI scheme (RFC 4475 §3.3.2, §3.3.3).
    if request.uri.scheme.lower() not in ACCEPTED_URI_SCHEMES:
        return Rejection.of(416)

    # §16.3 item 2: an element that would forward must not forward with Max-Forwards 0;
    # OPTIONS may be answered by the element itself (RFC 4475 §3.3.11).
    max_forwards = request.max_forwards
    if max_forwards == 0 and method != "OPTIONS" and method != "ACK":
        return Rejection.of(483)

    # §8.2.2.3 (UAS: Require) and §16.3 item 4 / §20.29 (proxy: Proxy-Require).
    # ACK and CANCEL are never refused for extensions (§8.2.2.3).
    if method not in ("ACK", "CANCEL"):
        wanted = list(request.proxy_require)
        if not proxy:
            wanted += request.require
        lower_supported = {s.lower() for s in supported}
        unsupported = [tag for tag in wanted if tag.lower() not in lower_supported]
        if unsupported:
            return Rejection.of(420, ("Unsupported", ", ".join(dict.fromkeys(unsupported))))

    if not proxy and method in SESSION_METHODS:
        # §8.2.3: a body we cannot process (RFC 4475 §3.3.6).
        if request.body:
            ctype = request.content_type
            mime = ctype.mime if ctype is not None else "application/sdp"
            encoding = request.get("content-encoding")
            if mime not in content_types or (encoding and encoding.strip().lower() != "identity"):
                return Rejection.of(415, ("Accept", ", ".join(sorted(content_types))))
        # §21.4.7 / RFC 4475 §3.3.15: the answer we would send is not acceptable.
        if method == "INVITE" and request.has("accept"):
            acceptable = {r.mime for r in request.accept}
            wanted_types = content_types | {"*/*"} | {m.split("/")[0] + "/*" for m in content_types}
            if not acceptable & wanted_types:
                return Rejection.of(
                    406,
                    ("Accept", ", ".join(sorted(content_types))),
                    ("Warning", '399 - "only application/sdp answers are possible"'),
                )

    # RFC 3515 §2.4.1 / RFC 6665 §4.1.1 (§8.1.1.8): a REFER or SUBSCRIBE that creates a
    # dialog names its target with exactly one Contact URI; without one no dialog can be
    # built, so it is refused before anything keeps state for it. An INVITE without one
    # is legal RFC 2543 (RFC 4475 §3.3.7): a UAS that builds dialogs refuses it itself.
    if (
        method in ("SUBSCRIBE", "REFER")
        and request.to_tag is None
        and (request.contact_star or len(request.contacts) != 1)
    ):
        return Rejection.of(400, reason="Dialog-Creating Request Needs One Contact")
    if method == "REFER" and len(request.get_all("refer-to")) != 1:
        return Rejection.of(400, reason="REFER Needs One Refer-To")  # RFC 3515 §2.4.1
    if method in ("SUBSCRIBE", "NOTIFY") and not request.has("event"):
        return Rejection.of(400, reason="Missing Event")  # RFC 6665 §8.2.1
    if method == "NOTIFY" and not request.has("subscription-state"):
        return Rejection.of(400, reason="Missing Subscription-State")  # RFC 6665 §4.1.3

    # RFC 3261 §10.3 step 3 (RFC 4475 §3.3.4): a REGISTER's To must be a SIP AOR.
    if method == "REGISTER" and not isinstance(request.to.uri, SipUri):
        return Rejection.of(400, reason="To is not a SIP or SIPS URI")
    return None
