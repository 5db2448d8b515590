"""Tests for limen.sip.digest (RFC 7616, RFC 8760, RFC 3261 §22.4)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from limen.sip.digest import (
    DigestAlgorithm,
    DigestChallenge,
    DigestCredentials,
    DigestServer,
    VerifyResult,
    answer_challenge,
    compute_ha1,
    compute_response,
    compute_userhash,
    format_challenge,
    format_credentials,
    parse_challenge,
    parse_credentials,
    select_challenge,
)
from limen.sip.errors import SipParseError, SipUsageError

# ---------------------------------------------------------------------------------------------
# RFC 7616 §3.9.1: the Mufasa example, MD5 and SHA-256
# ---------------------------------------------------------------------------------------------

REALM_7616 = "http-auth@example.org"
NONCE_7616 = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
CNONCE_7616 = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
OPAQUE_7616 = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
EXPECTED_7616 = {
    "MD5": "8ca523f5e9506fed4657c9700eebdbec",
    "SHA-256": "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
}

CHALLENGE_7616_SHA256 = (
    'Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=SHA-256, '
    'nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", '
    'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
)
CREDENTIALS_7616_SHA256 = (
    'Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html", '
    'algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", nc=00000001, '
    'cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop=auth, '
    'response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1", '
    'opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
)


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_rfc7616_example_compute(algorithm: str) -> None:
    ha1 = compute_ha1("Mufasa", REALM_7616, "Circle of Life", algorithm)
    response = compute_response(
        ha1,
        algorithm=algorithm,
        nonce=NONCE_7616,
        method="GET",
        uri="/dir/index.html",
        qop="auth",
        nc="00000001",
        cnonce=CNONCE_7616,
    )
    assert response == EXPECTED_7616[algorithm]


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_rfc7616_example_answer_challenge(algorithm: str) -> None:
    challenge = DigestChallenge(
        realm=REALM_7616,
        nonce=NONCE_7616,
        opaque=OPAQUE_7616,
        algorithm=algorithm,
        qop=("auth", "auth-int"),
    )
    creds = answer_challenge(
        challenge,
        method="GET",
        uri="/dir/index.html",
        username="Mufasa",
        password="Circle of Life",
        cnonce=CNONCE_7616,
    )
    assert creds.response == EXPECTED_7616[algorithm]
    assert creds.qop == "auth"
    assert creds.nc == "00000001"
    assert creds.nc_value == 1
    assert creds.opaque == OPAQUE_7616
    assert creds.algorithm == algorithm


def test_rfc7616_example_parse_challenge() -> None:
    ch = parse_challenge(CHALLENGE_7616_SHA256)
    assert ch == DigestChallenge(
        realm=REALM_7616,
        nonce=NONCE_7616,
        opaque=OPAQUE_7616,
        algorithm="SHA-256",
        qop=("auth", "auth-int"),
    )


def test_rfc7616_example_parse_credentials() -> None:
    cr = parse_credentials(CREDENTIALS_7616_SHA256)
    assert cr == DigestCredentials(
        username="Mufasa",
        realm=REALM_7616,
        nonce=NONCE_7616,
        uri="/dir/index.html",
        response=EXPECTED_7616["SHA-256"],
        algorithm="SHA-256",
        cnonce=CNONCE_7616,
        opaque=OPAQUE_7616,
        qop="auth",
        nc="00000001",
    )
    # Our canonical form of it is exactly the RFC's, on one line.
    assert format_credentials(cr) == CREDENTIALS_7616_SHA256


# RFC 7616 §3.9.2 (SHA-512-256, userhash, charset). The RFC's printed username hash and
# response do not follow from its inputs; these are the values of erratum 4897.
USERHASH_7616_ERRATUM = "793263caabb707a56211940d90411ea4a575adeccb7e360aeb624ed06ece9b0b"
RESPONSE_7616_ERRATUM = "3798d4131c277846293534c3edc11bd8a5e4cdcbff78b05db9d95eeb1cec68a5"


def test_rfc7616_sha512_256_userhash_example() -> None:
    challenge = parse_challenge(
        'Digest realm="api@example.org", qop="auth", algorithm=SHA-512-256, '
        'nonce="5TsQWLVdgBdmrQ0XsxbDODV+57QdFR34I9HAbC/RVvkK", '
        'opaque="HRPCssKJSGjCrkzDg8OhwpzCiGPChXYjwrI2QmXDnsOS", charset=UTF-8, userhash=true'
    )
    assert challenge.userhash is True
    assert challenge.charset == "UTF-8"
    creds = answer_challenge(
        challenge,
        method="GET",
        uri="/doe.json",
        username="J\u00e4s\u00f8n Doe",
        password="Secret, or not?",
        cnonce="NTg6RKcb9boFIAS3KrFK9BGeh+iDa/sm6jUMp2wds69v",
    )
    assert creds.username == USERHASH_7616_ERRATUM
    assert creds.userhash is True
    assert creds.response == RESPONSE_7616_ERRATUM
    assert compute_userhash("J\u00e4s\u00f8n Doe", "api@example.org", "SHA-512-256") == (
        USERHASH_7616_ERRATUM
    )


def test_username_star_is_decoded() -> None:
    cr = parse_credentials(
        "Digest username*=UTF-8''J%C3%A4s%C3%B8n%20Doe, realm=\"api@example.org\", "
        'uri="/doe.json", algorithm=SHA-512-256, nonce="n", nc=00000001, cnonce="c", '
        'qop=auth, response="r"'
    )
    assert cr.username == "J\u00e4s\u00f8n Doe"
    assert "username*" not in cr.params
    # We always send the quoted form (SIP quoted-strings carry UTF-8, RFC 3261 §25.1).
    assert parse_credentials(format_credentials(cr)) == cr


def test_username_and_username_star_together_rejected() -> None:
    with pytest.raises(SipParseError):
        parse_credentials(
            'Digest username="a", username*=UTF-8\'\'a, realm="r", nonce="n", uri="u", response="x"'
        )


# ---------------------------------------------------------------------------------------------
# RFC 2617 §3.5 / RFC 2069: no qop
# ---------------------------------------------------------------------------------------------


def test_rfc2069_no_qop_response() -> None:
    # RFC 2069 form: KD(H(A1), nonce:H(A2)), computed independently here.
    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    ha1 = md5("Mufasa:testrealm@host.com:Circle Of Life")
    expected = md5(f"{ha1}:dcd98b7102dd2f0e8b11d0f600bfb0c093:{md5('GET:/dir/index.html')}")
    challenge = parse_challenge(
        'Digest realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
        'opaque="5ccc069c403ebaf9f0171e9517f40e41"'
    )
    assert challenge.algorithm == "MD5"
    assert challenge.qop == ()
    creds = answer_challenge(
        challenge,
        method="GET",
        uri="/dir/index.html",
        username="Mufasa",
        password="Circle Of Life",
    )
    assert creds.qop is None and creds.nc is None and creds.cnonce is None
    assert creds.response == expected


# ---------------------------------------------------------------------------------------------
# Parsing details
# ---------------------------------------------------------------------------------------------


def test_parse_is_lenient_on_case_space_and_quoting() -> None:
    ch = parse_challenge(
        'digest  REALM = "r" ,, Nonce="n",algorithm="sha-256" ,qop=auth, STALE=TRUE, '
        'domain="sip:a.example  sip:b.example", x-ext=tok, y-ext="q\\"uoted"'
    )
    assert ch.realm == "r" and ch.nonce == "n"
    assert ch.algorithm == "sha-256"
    assert DigestAlgorithm.from_name(ch.algorithm) is DigestAlgorithm.SHA_256
    assert ch.qop == ("auth",)
    assert ch.stale is True
    assert ch.domain == ("sip:a.example", "sip:b.example")
    assert dict(ch.params) == {"x-ext": "tok", "y-ext": 'q"uoted'}


def test_stale_other_values_are_false() -> None:
    assert parse_challenge('Digest realm="r", nonce="n", stale=maybe').stale is False


def test_unquoted_uri_accepted() -> None:
    cr = parse_credentials(
        'Digest username="alice", realm="r", nonce="n", uri=sip:pbx.example;transport=tls, '
        'response="abc"'
    )
    assert cr.uri == "sip:pbx.example;transport=tls"
    assert cr.algorithm == "MD5"


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        'Basic realm="r"',
        'Bearer realm="r", nonce="n"',
        "Digest",
        'Digest realm="r"',  # no nonce
        'Digest nonce="n"',  # no realm
        'Digest realm="r", nonce="n',  # unterminated
        'Digest realm="r", nonce="n\\',
        'Digest realm="r" nonce="n"',  # missing comma
        'Digest realm="r", nonce="n", realm="s"',  # repeated
        'Digest realm=, nonce="n"',
        'Digest ="r", nonce="n"',
        'Digest realm"r", nonce="n"',
        'Digestrealm="r", nonce="n"',
        'Digest realm="r\nx", nonce="n"',
        'Digest realm="r", nonce=n"x"',
        'Digest realm="\ud800", nonce="n"',
    ],
)
def test_bad_challenges(value: str) -> None:
    with pytest.raises(SipParseError) as info:
        parse_challenge(value)
    assert info.value.status == 400


BASE_CREDS = 'Digest username="u", realm="r", nonce="n", uri="sip:x", response="00"'


@pytest.mark.parametrize(
    "value",
    [
        'Digest realm="r", nonce="n", uri="sip:x", response="00"',
        'Digest username="u", nonce="n", uri="sip:x", response="00"',
        'Digest username="u", realm="r", uri="sip:x", response="00"',
        'Digest username="u", realm="r", nonce="n", response="00"',
        'Digest username="u", realm="r", nonce="n", uri="sip:x"',
        BASE_CREDS + ", qop=auth",  # qop without nc/cnonce
        BASE_CREDS + ", qop=auth, nc=00000001",  # no cnonce
        BASE_CREDS + ', qop=auth, cnonce="c"',  # no nc
        BASE_CREDS + ', qop=auth, cnonce="c", nc=1',
        BASE_CREDS + ', qop=auth, cnonce="c", nc=0000000g',
        BASE_CREDS + ', qop=auth, cnonce="c", nc=0x000001',
        BASE_CREDS + ', qop=auth, cnonce="c", nc=" 0000001"',
        BASE_CREDS + ', qop=auth, cnonce="c", nc=000_0001',
        'Digest username*=UTF-8\'\'%ff, realm="r", nonce="n", uri="u", response="x"',
        'Digest username*=KOI8-R\'\'a, realm="r", nonce="n", uri="u", response="x"',
        'Digest username*=a, realm="r", nonce="n", uri="u", response="x"',
        'Digest username*=UTF-8\'\'a%0Db, realm="r", nonce="n", uri="u", response="x"',
    ],
)
def test_bad_credentials(value: str) -> None:
    with pytest.raises(SipParseError):
        parse_credentials(value)


def test_nc_uppercase_hex_accepted() -> None:
    cr = parse_credentials(BASE_CREDS + ', qop=auth, cnonce="c", nc=0000000A')
    assert cr.nc == "0000000A" and cr.nc_value == 10


def test_format_challenge_canonical() -> None:
    ch = DigestChallenge(
        realm='a "quoted" \\ realm',
        nonce="n",
        opaque="o",
        algorithm="SHA-256",
        qop=("auth", "auth-int"),
        stale=True,
        domain=("sip:a", "sip:b"),
        userhash=True,
        charset="UTF-8",
        params={"ext": "v"},
    )
    text = format_challenge(ch)
    assert text == (
        'Digest realm="a \\"quoted\\" \\\\ realm", domain="sip:a sip:b", qop="auth,auth-int", '
        'algorithm=SHA-256, nonce="n", opaque="o", stale=true, charset=UTF-8, userhash=true, '
        'ext="v"'
    )
    assert parse_challenge(text) == ch


def test_format_rejects_unrepresentable_values() -> None:
    with pytest.raises(SipUsageError):
        format_challenge(DigestChallenge(realm="a\r\nb", nonce="n"))
    with pytest.raises(SipUsageError):
        format_challenge(DigestChallenge(realm="r", nonce="n", qop=("a,b",)))
    with pytest.raises(SipUsageError):
        format_challenge(DigestChallenge(realm="r", nonce="n", params={"realm": "x"}))
    with pytest.raises(SipUsageError):
        DigestChallenge(realm="r", nonce="n", params={"a": "1", "A": "2"})


def test_values_are_frozen_and_hashable() -> None:
    ch = DigestChallenge(realm="r", nonce="n", params={"x": "1"})
    assert hash(ch) == hash(DigestChallenge(realm="r", nonce="n", params={"x": "1"}))
    with pytest.raises(TypeError):
        ch.params["y"] = "2"  # type: ignore[index]


# ---------------------------------------------------------------------------------------------
# Hashing variants
# ---------------------------------------------------------------------------------------------


def _h(name: str, text: str) -> str:
    return hashlib.new(name, text.encode()).hexdigest()


@pytest.mark.parametrize(
    ("algorithm", "hname"),
    [("MD5-sess", "md5"), ("SHA-256-sess", "sha256"), ("SHA-512-256-sess", "sha512_256")],
)
def test_sess_ha1(algorithm: str, hname: str) -> None:
    # RFC 7616 §3.4.2: A1 = H(user:realm:pass):nonce:cnonce for -sess.
    inner = _h(hname, "bob:r:pw")
    assert compute_ha1("bob", "r", "pw", algorithm, nonce="N", cnonce="C") == _h(
        hname, f"{inner}:N:C"
    )
    with pytest.raises(SipUsageError):
        compute_ha1("bob", "r", "pw", algorithm)


def test_auth_int_hashes_body() -> None:
    body = b"v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\n"
    ha1 = compute_ha1("bob", "r", "pw", "SHA-256")
    ha2 = _h("sha256", "INVITE:sip:x:" + hashlib.sha256(body).hexdigest())
    expected = _h("sha256", f"{ha1}:n:00000001:c:auth-int:{ha2}")
    got = compute_response(
        ha1,
        algorithm="SHA-256",
        nonce="n",
        method="INVITE",
        uri="sip:x",
        qop="auth-int",
        nc="00000001",
        cnonce="c",
        body=body,
    )
    assert got == expected


def test_compute_rejects_unknown_algorithm_and_qop() -> None:
    with pytest.raises(SipUsageError):
        compute_ha1("u", "r", "p", "SHA3-256")
    with pytest.raises(SipUsageError):
        compute_response(
            "00",
            algorithm="MD5",
            nonce="n",
            method="M",
            uri="u",
            qop="x",
            nc="00000001",
            cnonce="c",
        )


# ---------------------------------------------------------------------------------------------
# Client side
# ---------------------------------------------------------------------------------------------


def test_client_prefers_auth_and_generates_cnonce() -> None:
    ch = DigestChallenge(realm="r", nonce="n", qop=("auth-int", "auth"))
    a = answer_challenge(ch, method="REGISTER", uri="sip:r", username="u", password="p", nc=7)
    b = answer_challenge(ch, method="REGISTER", uri="sip:r", username="u", password="p", nc=7)
    assert a.qop == "auth" and a.nc == "00000007"
    assert a.cnonce and b.cnonce and a.cnonce != b.cnonce
    assert len(a.cnonce) >= 16


def test_client_auth_int_only_when_alone() -> None:
    ch = DigestChallenge(realm="r", nonce="n", qop=("auth-int",))
    cr = answer_challenge(ch, method="INVITE", uri="sip:r", username="u", password="p", body=b"x")
    assert cr.qop == "auth-int"


def test_client_refuses_unknown_algorithm_or_qop() -> None:
    with pytest.raises(SipParseError):
        answer_challenge(
            DigestChallenge(realm="r", nonce="n", algorithm="SHA3"),
            method="M",
            uri="u",
            username="u",
            password="p",
        )
    with pytest.raises(SipParseError):
        answer_challenge(
            DigestChallenge(realm="r", nonce="n", qop=("auth-conf",)),
            method="M",
            uri="u",
            username="u",
            password="p",
        )
    with pytest.raises(SipUsageError):
        answer_challenge(
            DigestChallenge(realm="r", nonce="n"),
            method="M",
            uri="u",
            username="u",
            password="p",
            nc=0,
        )


def test_select_challenge_prefers_strongest() -> None:
    md5 = DigestChallenge(realm="r", nonce="n", algorithm="MD5", qop=("auth",))
    sha256 = DigestChallenge(realm="r", nonce="n", algorithm="SHA-256", qop=("auth",))
    sha512 = DigestChallenge(realm="r", nonce="n", algorithm="SHA-512-256", qop=("auth",))
    unknown = DigestChallenge(realm="r", nonce="n", algorithm="SHA3-256", qop=("auth",))
    bad_qop = DigestChallenge(realm="r", nonce="n", algorithm="SHA-512-256", qop=("x",))
    other = DigestChallenge(realm="other", nonce="n", algorithm="SHA-512-256")
    assert select_challenge([md5, sha256, sha512]) is sha512
    assert select_challenge([md5, sha256]) is sha256
    assert select_challenge([unknown, bad_qop, md5]) is md5
    assert select_challenge([other, md5], realm="r") is md5
    assert select_challenge([unknown]) is None
    assert select_challenge([]) is None


# ---------------------------------------------------------------------------------------------
# Server side
# ---------------------------------------------------------------------------------------------

SECRET = b"0123456789abcdef0123456789abcdef"
T0 = 1_700_000_000.0


def _server(**kw: object) -> DigestServer:
    return DigestServer("pbx.example", SECRET, **kw)  # type: ignore[arg-type]


def _answer(
    ch: DigestChallenge,
    *,
    password: str = "secret",
    nc: int = 1,
    method: str = "REGISTER",
    body: bytes = b"",
) -> DigestCredentials:
    return answer_challenge(
        ch,
        method=method,
        uri="sip:pbx.example",
        username="alice",
        password=password,
        body=body,
        nc=nc,
    )


def test_server_challenges_in_preference_order() -> None:
    server = _server(algorithms=("SHA-512-256", "SHA-256", "MD5"))
    chs = server.challenges(T0, opaque="op")
    assert [c.algorithm for c in chs] == ["SHA-512-256", "SHA-256", "MD5"]
    assert len({c.nonce for c in chs}) == 1
    assert all(c.realm == "pbx.example" and c.qop == ("auth",) and c.opaque == "op" for c in chs)
    assert all(parse_challenge(format_challenge(c)) == c for c in chs)
    assert server.challenges(T0, stale=True)[0].stale is True
    assert server.challenges(T0)[0].nonce != chs[0].nonce


@pytest.mark.parametrize("algorithm", [a.value for a in DigestAlgorithm])
def test_server_accepts_good_response(algorithm: str) -> None:
    server = _server(algorithms=(algorithm,))
    (ch,) = server.challenges(T0)
    cr = parse_credentials(format_credentials(_answer(ch)))
    result = server.verify(
        cr, method="REGISTER", password="secret", now=T0 + 1, expected_uri="sip:pbx.example"
    )
    assert result is VerifyResult.OK


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256-sess"])
def test_server_accepts_stored_ha1(algorithm: str) -> None:
    server = _server(algorithms=(algorithm,))
    (ch,) = server.challenges(T0)
    base = algorithm.removesuffix("-sess")
    ha1 = compute_ha1("alice", "pbx.example", "secret", base)
    result = server.verify(_answer(ch), method="REGISTER", ha1=ha1, now=T0)
    assert result is VerifyResult.OK
    with pytest.raises(SipUsageError):
        server.verify(_answer(ch, nc=2), method="REGISTER", ha1="abcd", now=T0)


def test_server_wrong_password() -> None:
    server = _server()
    ch = server.challenges(T0)[0]
    result = server.verify(
        _answer(ch, password="guess"), method="REGISTER", password="secret", now=T0
    )
    assert result is VerifyResult.BAD_RESPONSE


def test_server_wrong_method_is_bad_response() -> None:
    server = _server()
    ch = server.challenges(T0)[0]
    result = server.verify(_answer(ch), method="INVITE", password="secret", now=T0)
    assert result is VerifyResult.BAD_RESPONSE


def test_server_wrong_realm() -> None:
    server = _server()
    ch = server.challenges(T0)[0]
    other = DigestChallenge(realm="elsewhere", nonce=ch.nonce, algorithm=ch.algorithm, qop=ch.qop)
    result = server.verify(_answer(other), method="REGISTER", password="secret", now=T0)
    assert result is VerifyResult.BAD_REALM


def test_server_unoffered_algorithm() -> None:
    server = _server(algorithms=("SHA-256",))
    ch = DigestChallenge(
        realm="pbx.example", nonce=server.new_nonce(T0), algorithm="MD5", qop=("auth",)
    )
    result = server.verify(_answer(ch), method="REGISTER", password="secret", now=T0)
    assert result is VerifyResult.BAD_ALGORITHM


def test_server_stale_after_lifetime() -> None:
    server = _server(nonce_lifetime=60.0)
    ch = server.challenges(T0)[0]
    cr = _answer(ch)
    assert server.verify(cr, method="REGISTER", password="secret", now=T0 + 60) is VerifyResult.OK
    late = _answer(ch, nc=2)
    assert server.verify(late, method="REGISTER", password="secret", now=T0 + 60.5) is (
        VerifyResult.STALE
    )
    # A wrong password on an old nonce is not "stale" (RFC 7616 §3.3).
    wrong = _answer(ch, nc=3, password="guess")
    assert server.verify(wrong, method="REGISTER", password="secret", now=T0 + 61) is (
        VerifyResult.BAD_RESPONSE
    )


def test_server_nonce_from_the_future_is_stale() -> None:
    server = _server()
    ch = server.challenges(T0 + 3600)[0]
    result = server.verify(_answer(ch), method="REGISTER", password="secret", now=T0)
    assert result is VerifyResult.STALE


def test_server_forged_and_foreign_nonces() -> None:
    server = _server()
    good = server.new_nonce(T0)

    def verify_with(nonce: str) -> VerifyResult:
        ch = DigestChallenge(realm="pbx.example", nonce=nonce, algorithm="SHA-256", qop=("auth",))
        return server.verify(_answer(ch), method="REGISTER", password="secret", now=T0)

    flipped = good[:10] + ("A" if good[10] != "A" else "B") + good[11:]
    assert verify_with(flipped) is VerifyResult.BAD_NONCE
    assert verify_with("7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v") is VerifyResult.BAD_NONCE
    assert verify_with("") is VerifyResult.BAD_NONCE
    assert verify_with(good + "=") is VerifyResult.BAD_NONCE
    assert verify_with(good[:-1] + "é") is VerifyResult.BAD_NONCE
    assert verify_with(good[:20] + "!" + good[21:]) is VerifyResult.BAD_NONCE
    # Another secret or another realm did not mint it.
    other_secret = DigestServer("pbx.example", b"x" * 32).new_nonce(T0)
    other_realm = DigestServer("other.example", SECRET).new_nonce(T0)
    assert verify_with(other_secret) is VerifyResult.BAD_NONCE
    assert verify_with(other_realm) is VerifyResult.BAD_NONCE
    assert verify_with(good) is VerifyResult.OK


def test_server_restart_keeps_nonces_valid() -> None:
    ch = _server().challenges(T0)[0]
    restarted = _server()
    assert restarted.verify(_answer(ch), method="REGISTER", password="secret", now=T0 + 5) is (
        VerifyResult.OK
    )


def test_server_nc_replay() -> None:
    server = _server()
    ch = server.challenges(T0)[0]

    def verify(nc: int) -> VerifyResult:
        return server.verify(_answer(ch, nc=nc), method="REGISTER", password="secret", now=T0)

    assert verify(1) is VerifyResult.OK
    assert verify(1) is VerifyResult.REPLAY
    assert verify(2) is VerifyResult.OK
    assert verify(5) is VerifyResult.OK
    assert verify(3) is VerifyResult.REPLAY  # below the highest seen
    assert verify(5) is VerifyResult.REPLAY
    assert verify(6) is VerifyResult.OK


def test_server_replay_window_accepts_reordering_once() -> None:
    server = _server(replay_window=8)
    ch = server.challenges(T0)[0]

    def verify(nc: int) -> VerifyResult:
        return server.verify(_answer(ch, nc=nc), method="REGISTER", password="secret", now=T0)

    assert verify(2) is VerifyResult.OK
    assert verify(1) is VerifyResult.OK  # crossed on the wire
    assert verify(1) is VerifyResult.REPLAY
    assert verify(12) is VerifyResult.OK
    assert verify(5) is VerifyResult.OK
    assert verify(5) is VerifyResult.REPLAY
    assert verify(4) is VerifyResult.REPLAY  # 12 - 4 = 8: outside the window


def test_server_a_wrong_answer_burns_the_nonce() -> None:
    """Issue 9: one nonce buys one guess. After a wrong answer even the right password is
    refused on that nonce (USED_NONCE, no hashing), so guessers need a new challenge each."""
    server = _server()
    ch = server.challenges(T0)[0]
    bad = _answer(ch, nc=9, password="guess")
    assert server.verify(bad, method="REGISTER", password="secret", now=T0) is (
        VerifyResult.BAD_RESPONSE
    )
    right = _answer(ch, nc=1)
    assert server.verify(right, method="REGISTER", password="secret", now=T0) is (
        VerifyResult.USED_NONCE
    )
    fresh = server.challenges(T0)[0]
    assert server.verify(_answer(fresh, nc=1), method="REGISTER", password="secret", now=T0) is (
        VerifyResult.OK
    )


def test_server_unknown_users_burn_nonces_too() -> None:
    server = _server()
    ch = server.challenges(T0)[0]
    assert server.verify(_answer(ch, nc=1), method="REGISTER", now=T0) is (
        VerifyResult.UNKNOWN_USER
    )
    assert server.verify(_answer(ch, nc=2), method="REGISTER", now=T0) is VerifyResult.USED_NONCE


def test_server_failures_per_nonce_is_a_small_bound() -> None:
    server = _server(max_failures_per_nonce=3)
    ch = server.challenges(T0)[0]
    results = [
        server.verify(
            _answer(ch, nc=n, password=f"guess{n}"), method="REGISTER", password="secret", now=T0
        )
        for n in range(1, 7)
    ]
    assert results == [VerifyResult.BAD_RESPONSE] * 3 + [VerifyResult.USED_NONCE] * 3


def test_server_burnt_nonce_memory_is_bounded() -> None:
    server = _server(max_nonces=4, nonce_lifetime=100.0)
    chs = [server.challenges(T0 + i)[0] for i in range(10)]
    for i, ch in enumerate(chs):
        wrong = _answer(ch, nc=1, password="guess")
        assert server.verify(wrong, method="REGISTER", password="x", now=T0 + i) is (
            VerifyResult.BAD_RESPONSE
        )
    assert server.failed_nonces == 4
    # Evicted entries stay burnt: everything issued at or before the evicted floor.
    again = _answer(chs[0], nc=2, password="guess")
    assert server.verify(again, method="REGISTER", password="x", now=T0 + 10) is (
        VerifyResult.USED_NONCE
    )
    # A nonce issued after the floor is unaffected.
    late = server.challenges(T0 + 20)[0]
    assert (
        server.verify(_answer(late, nc=1), method="REGISTER", password="secret", now=T0 + 20)
        is VerifyResult.OK
    )
    # Entries older than the lifetime leave the table.
    server.verify(
        _answer(server.challenges(T0 + 500)[0], nc=1, password="g"),
        method="REGISTER",
        password="x",
        now=T0 + 500,
    )
    assert server.failed_nonces == 1


def test_server_memory_is_bounded_and_evicted_nonces_go_stale() -> None:
    server = _server(max_nonces=3, nonce_lifetime=100.0)
    chs = [server.challenges(T0 + i)[0] for i in range(5)]
    for i, ch in enumerate(chs):
        cr = _answer(ch)
        assert server.verify(cr, method="REGISTER", password="secret", now=T0 + i) is (
            VerifyResult.OK
        )
    assert server.tracked_nonces == 3
    # chs[0] and chs[1] were evicted while alive: their nc history is gone, so they must
    # not be trusted again (a replay of nc=1 would otherwise pass).
    replay = _answer(chs[0])
    assert server.verify(replay, method="REGISTER", password="secret", now=T0 + 5) is (
        VerifyResult.STALE
    )
    # Expired entries are dropped as time passes.
    fresh = server.challenges(T0 + 500)[0]
    assert server.verify(_answer(fresh), method="REGISTER", password="secret", now=T0 + 500) is (
        VerifyResult.OK
    )
    assert server.tracked_nonces == 1


def test_server_unknown_user() -> None:
    server = _server()
    ch = server.challenges(T0)[0]
    assert server.verify(_answer(ch), method="REGISTER", now=T0) is VerifyResult.UNKNOWN_USER
    # Same checks as a known user before the response: a bad nonce is still a bad nonce.
    forged = DigestChallenge(
        realm="pbx.example", nonce="x" * 48, algorithm="SHA-256", qop=("auth",)
    )
    assert server.verify(_answer(forged), method="REGISTER", now=T0) is VerifyResult.BAD_NONCE


def test_server_no_qop_rfc2069_client() -> None:
    server = _server(algorithms=("MD5",))
    ch = server.challenges(T0)[0]
    old_phone = DigestChallenge(realm=ch.realm, nonce=ch.nonce)  # ignores qop
    cr = _answer(old_phone)
    assert cr.qop is None
    assert server.verify(cr, method="REGISTER", password="secret", now=T0) is VerifyResult.OK
    strict = _server(algorithms=("MD5",), allow_no_qop=False)
    assert strict.verify(cr, method="REGISTER", password="secret", now=T0) is (VerifyResult.BAD_QOP)


def test_server_auth_int() -> None:
    server = _server(qop="auth-int")
    ch = server.challenges(T0)[0]
    assert ch.qop == ("auth-int",)
    body = b"v=0\r\n"
    cr = _answer(ch, method="INVITE", body=body)
    assert cr.qop == "auth-int"
    assert server.verify(cr, method="INVITE", password="secret", now=T0, body=body) is (
        VerifyResult.OK
    )
    cr2 = _answer(ch, method="INVITE", body=body, nc=2)
    assert server.verify(cr2, method="INVITE", password="secret", now=T0, body=b"v=1\r\n") is (
        VerifyResult.BAD_RESPONSE
    )
    # qop=auth was not offered here.
    auth_only = DigestChallenge(
        realm=ch.realm, nonce=ch.nonce, algorithm=ch.algorithm, qop=("auth",)
    )
    assert (
        server.verify(_answer(auth_only, nc=3), method="REGISTER", password="secret", now=T0)
        is VerifyResult.BAD_QOP
    )


def test_server_uri_mismatch() -> None:
    server = _server()
    ch = server.challenges(T0)[0]
    result = server.verify(
        _answer(ch), method="REGISTER", password="secret", now=T0, expected_uri="sip:other.example"
    )
    assert result is VerifyResult.BAD_URI


def test_server_userhash() -> None:
    server = _server()
    ch = server.challenges(T0)[0]
    hashed = DigestChallenge(
        realm=ch.realm, nonce=ch.nonce, algorithm=ch.algorithm, qop=ch.qop, userhash=True
    )
    cr = _answer(hashed)
    assert cr.username == compute_userhash("alice", "pbx.example", "SHA-256")
    ok = server.verify(cr, method="REGISTER", password="secret", username="alice", now=T0)
    assert ok is VerifyResult.OK
    with pytest.raises(SipUsageError):
        server.verify(_answer(hashed, nc=2), method="REGISTER", password="secret", now=T0)


def test_server_rejects_bad_configuration() -> None:
    with pytest.raises(SipUsageError):
        DigestServer("r", b"short")
    with pytest.raises(SipUsageError):
        DigestServer("r", SECRET, algorithms=("SHA3",))
    with pytest.raises(SipUsageError):
        DigestServer("r", SECRET, qop="auth-conf")
    with pytest.raises(SipUsageError):
        DigestServer("r", SECRET, algorithms=())


# ---------------------------------------------------------------------------------------------
# Properties (Hypothesis)
# ---------------------------------------------------------------------------------------------

_TOKEN_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
tokens = st.text(alphabet=_TOKEN_ALPHABET, min_size=1, max_size=12)
lower_tokens = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyz0123456789-.!%*_+`'~", min_size=1, max_size=12
)
# Anything a quoted-string can carry: all of Unicode but CR, LF and lone surrogates.
texts = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\r\n"),
    max_size=30,
)
domain_uris = st.text(
    alphabet=st.characters(exclude_categories=["Cs", "Zs", "Zl", "Zp", "Cc"]),
    min_size=1,
    max_size=12,
).filter(lambda s: not any(c.isspace() for c in s))
nc_values = st.integers(min_value=0, max_value=0xFFFFFFFF).map(lambda n: f"{n:08x}")


def _extras(known: frozenset[str]) -> st.SearchStrategy[dict[str, str]]:
    return st.dictionaries(lower_tokens.filter(lambda n: n not in known), texts, max_size=3)


CHALLENGE_NAMES = frozenset(
    {"realm", "nonce", "opaque", "algorithm", "qop", "stale", "domain", "userhash", "charset"}
)
CREDENTIAL_NAMES = frozenset(
    {
        "username",
        "realm",
        "nonce",
        "uri",
        "response",
        "algorithm",
        "cnonce",
        "opaque",
        "qop",
        "nc",
        "userhash",
    }
)

challenges = st.builds(
    DigestChallenge,
    realm=texts,
    nonce=texts,
    opaque=st.none() | texts,
    algorithm=texts,
    qop=st.lists(tokens, max_size=3).map(tuple),
    stale=st.booleans(),
    domain=st.lists(domain_uris, max_size=3).map(tuple),
    userhash=st.booleans(),
    charset=st.none() | texts,
    params=_extras(CHALLENGE_NAMES),
)


@st.composite
def credentials(draw: st.DrawFn) -> DigestCredentials:
    qop = draw(st.none() | texts)
    needs = qop is not None
    return DigestCredentials(
        username=draw(texts),
        realm=draw(texts),
        nonce=draw(texts),
        uri=draw(texts),
        response=draw(texts),
        algorithm=draw(texts),
        cnonce=draw(texts) if needs else draw(st.none() | texts),
        opaque=draw(st.none() | texts),
        qop=qop,
        nc=draw(nc_values) if needs else draw(st.none() | nc_values),
        userhash=draw(st.booleans()),
        params=draw(_extras(CREDENTIAL_NAMES | {"username*"})),
    )


@given(challenges)
def test_challenge_format_parse_identity(ch: DigestChallenge) -> None:
    assert parse_challenge(format_challenge(ch)) == ch


@given(credentials())
def test_credentials_format_parse_identity(cr: DigestCredentials) -> None:
    assert parse_credentials(format_credentials(cr)) == cr


def _only_parse_errors(text: str) -> None:
    for parse in (parse_challenge, parse_credentials):
        try:
            parse(text)
        except SipParseError as exc:
            assert exc.status == 400


@settings(max_examples=300)
@given(st.text())
def test_parsers_raise_only_parse_errors_on_any_text(text: str) -> None:
    _only_parse_errors(text)
    _only_parse_errors("Digest " + text)


# Near-valid input reaches deeper: pieces of the grammar shuffled together.
_pieces = st.sampled_from(
    [
        '"',
        "\\",
        ",",
        "=",
        " ",
        "\t",
        "\r",
        "\n",
        "realm",
        "nonce",
        "uri",
        "username",
        "username*",
        "response",
        "qop",
        "nc",
        "cnonce",
        "auth",
        "00000001",
        "UTF-8''",
        "%C3",
        "%",
        "'",
        "é",
        "\x00",
        "\ud800",
        "algorithm",
        "MD5",
        "stale",
        "true",
        "domain",
    ]
)


@settings(max_examples=500)
@given(st.lists(_pieces | st.text(max_size=3), max_size=40).map("".join))
def test_parsers_raise_only_parse_errors_on_grammar_soup(text: str) -> None:
    _only_parse_errors("Digest " + text)


@settings(max_examples=200)
@given(
    credentials(),
    st.sampled_from(["REGISTER", "INVITE"]),
    st.binary(max_size=20),
)
def test_server_verify_never_raises_on_parsed_credentials(
    cr: DigestCredentials, method: str, body: bytes
) -> None:
    server = DigestServer(
        "r", SECRET, algorithms=[a.value for a in DigestAlgorithm], qop="auth,auth-int"
    )
    parsed = parse_credentials(format_credentials(cr))
    for password in ("pw", None):
        assert isinstance(
            server.verify(
                parsed, method=method, password=password, username="u", now=T0, body=body
            ),
            VerifyResult,
        )
