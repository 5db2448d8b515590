"""DigestClient: answering challenges for one request or one registration, against our
own DigestServer (RFC 3261 §22.2-§22.4, RFC 7616 §3.3-§3.4, RFC 8760 §2.4)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from limen.sip import Request, Response, parse_message
from limen.sip.digest import (
    AuthAnswer,
    DigestChallenge,
    DigestClient,
    DigestServer,
    VerifyResult,
    format_challenge,
    parse_credentials,
)
from limen.sip.errors import SipParseError, SipUsageError

SECRET = b"0123456789abcdef0123456789abcdef"
T0 = 1_700_000_000.0
URI = "sip:pbx.example.com"


@dataclass
class FakeChallenge:
    """A 401/407 as the client sees it (Response has the same three attributes)."""

    status: int
    challenges: list[DigestChallenge] = field(default_factory=list)
    broken: bool = False

    def _get(self) -> list[DigestChallenge]:
        if self.broken:
            raise SipParseError("malformed challenge")
        return self.challenges

    @property
    def www_authenticate(self) -> list[DigestChallenge]:
        assert self.status == 401, "a 401's challenges are in WWW-Authenticate"
        return self._get()

    @property
    def proxy_authenticate(self) -> list[DigestChallenge]:
        assert self.status == 407, "a 407's challenges are in Proxy-Authenticate"
        return self._get()


def _server(**kw: object) -> DigestServer:
    return DigestServer("pbx", SECRET, algorithms=("MD5", "SHA-256"), **kw)  # type: ignore[arg-type]


def _verify(server: DigestServer, answer: AuthAnswer, now: float = T0) -> VerifyResult:
    return server.verify(
        parse_credentials(answer.value), method="REGISTER", now=now, password="secret"
    )


def test_401_answered_with_authorization_and_the_strongest_algorithm() -> None:
    server = _server()
    client = DigestClient("7000", "secret")
    assert client.authorization("REGISTER", URI) is None  # nothing to answer yet
    # The server lists MD5 first; RFC 8760 §2.4 lets the client take the strongest.
    assert client.on_challenge(FakeChallenge(401, server.challenges(T0)))
    answer = client.authorization("REGISTER", URI)
    assert answer is not None and answer.name == "Authorization"
    creds = parse_credentials(answer.value)
    assert creds.algorithm == "SHA-256" and creds.nc == "00000001" and creds.uri == URI
    assert _verify(server, answer) is VerifyResult.OK


def test_407_answered_with_proxy_authorization_and_auth_int_body() -> None:
    server = DigestServer("pbx", SECRET, qop="auth-int")
    client = DigestClient("7000", "secret")
    assert client.on_challenge(FakeChallenge(407, server.challenges(T0)))
    answer = client.authorization("INVITE", "sip:7001@pbx", b"v=0\r\n")
    assert answer is not None and answer.name == "Proxy-Authorization"
    creds = parse_credentials(answer.value)
    assert creds.qop == "auth-int"
    result = server.verify(creds, method="INVITE", now=T0, password="secret", body=b"v=0\r\n")
    assert result is VerifyResult.OK
    other = server.verify(creds, method="INVITE", now=T0, password="secret", body=b"v=1\r\n")
    assert other is VerifyResult.BAD_RESPONSE


def test_nonce_count_grows_per_nonce_across_requests() -> None:
    """A registration refreshes with the challenge it holds: each request counts one more
    on that nonce, so the server's replay check (RFC 7616 §5.5) accepts every one."""
    server = _server()
    client = DigestClient("7000", "secret")
    assert client.on_challenge(FakeChallenge(401, server.challenges(T0)))
    counts = []
    for i in range(3):
        client.new_request()
        answer = client.authorization("REGISTER", URI)
        assert answer is not None
        counts.append(parse_credentials(answer.value).nc)
        assert _verify(server, answer, T0 + i) is VerifyResult.OK
    assert counts == ["00000001", "00000002", "00000003"]
    # The server saw nc=3; sending nc=3 again would be a replay.
    assert answer is not None
    assert _verify(server, answer, T0 + 4) is VerifyResult.REPLAY


def test_same_nonce_refused_again_is_final_unless_stale() -> None:
    server = _server()
    client = DigestClient("7000", "wrong")
    challenges = server.challenges(T0)
    assert client.on_challenge(FakeChallenge(401, challenges))
    answer = client.authorization("REGISTER", URI)
    assert answer is not None and _verify(server, answer) is VerifyResult.BAD_RESPONSE
    # RFC 3261 §22.2: a challenge with the nonce just answered means the credentials
    # were refused; retrying would loop.
    assert not client.on_challenge(FakeChallenge(401, challenges))
    assert client.rounds == 1
    # RFC 7616 §3.3: stale=true says the credentials were right but the nonce old.
    stale = [DigestChallenge(realm="pbx", nonce=challenges[0].nonce, stale=True)]
    assert client.on_challenge(FakeChallenge(401, stale))
    assert client.rounds == 2


def test_at_most_max_rounds_per_request_and_new_request_starts_again() -> None:
    server = _server()
    client = DigestClient("7000", "secret", max_rounds=2)
    assert client.on_challenge(FakeChallenge(401, server.challenges(T0)))
    assert client.on_challenge(FakeChallenge(401, server.challenges(T0 + 1)))
    assert not client.on_challenge(FakeChallenge(401, server.challenges(T0 + 2)))
    client.new_request()
    held = client.challenge
    assert held is not None  # kept: the next request carries credentials at once
    assert client.on_challenge(FakeChallenge(401, server.challenges(T0 + 3)))
    # After a new request even the held nonce may be answered once more.
    client.new_request()
    assert client.on_challenge(FakeChallenge(401, [held]))


def test_new_nonce_starts_at_one_and_reset_forgets_the_challenge() -> None:
    server = _server()
    client = DigestClient("7000", "secret")
    assert client.on_challenge(FakeChallenge(401, server.challenges(T0)))
    first = client.authorization("REGISTER", URI)
    assert first is not None and parse_credentials(first.value).nc == "00000001"
    client.authorization("REGISTER", URI)
    assert client.on_challenge(FakeChallenge(407, server.challenges(T0 + 1)))
    answer = client.authorization("REGISTER", URI)
    assert answer is not None and answer.name == "Proxy-Authorization"
    assert parse_credentials(answer.value).nc == "00000001"
    client.reset()
    assert client.challenge is None and client.authorization("REGISTER", URI) is None


def test_unusable_challenges_are_final_answers() -> None:
    client = DigestClient("7000", "secret")
    unknown = DigestChallenge(realm="pbx", nonce="n", algorithm="SHA-1")
    assert not client.on_challenge(FakeChallenge(401, [unknown]))
    assert not client.on_challenge(FakeChallenge(401, []))
    # A malformed challenge header is the server's refusal, not an exception (the caller
    # relays the 401/407 as a failure).
    assert not client.on_challenge(FakeChallenge(407, broken=True))
    assert not client.on_challenge(FakeChallenge(403))
    assert client.rounds == 0 and client.challenge is None


def test_max_rounds_must_be_positive() -> None:
    with pytest.raises(SipUsageError):
        DigestClient("7000", "secret", max_rounds=0)


def test_a_parsed_407_is_answered_and_the_retry_verifies() -> None:
    """The whole path on real messages: a 407 from the wire, Request.retry, and the
    server checking the retried request's Proxy-Authorization."""
    server = _server()
    invite = Request(
        "INVITE",
        "sip:7001@pbx",
        [
            ("Via", "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKa"),
            ("From", "<sip:7000@pbx>;tag=t"),
            ("To", "<sip:7001@pbx>"),
            ("Call-ID", "c1"),
            ("CSeq", "1 INVITE"),
        ],
        b"v=0\r\n",
    )
    challenges = [("Proxy-Authenticate", format_challenge(ch)) for ch in server.challenges(T0)]
    wire = bytes(invite.create_response(407, to_tag="x", headers=challenges))
    response = parse_message(wire)
    assert isinstance(response, Response)
    client = DigestClient("7000", "secret")
    assert client.on_challenge(response)
    answer = client.authorization(invite.method, str(invite.uri), invite.body)
    assert answer is not None
    retry = invite.retry("SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKb")
    retry.set(answer.name, answer.value)
    again = parse_message(bytes(retry))
    assert isinstance(again, Request) and again.cseq.seq == 2
    (creds,) = again.proxy_authorization
    assert creds.algorithm == "SHA-256"
    assert server.verify(creds, method="INVITE", now=T0, password="secret") is VerifyResult.OK
