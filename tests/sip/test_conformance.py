"""RFC 4475 (SIP torture tests) and RFC 5118 (IPv6 torture tests) at the message layer.

Each row says what the parser must do with the file (parse, or refuse with a status; a
response that fails to parse is dropped) and, for requests that parse, what a UAS answers
after ``check_request`` (None: go on processing). The manifests in
``../shared/testdata/*/MANIFEST.tsv`` give the RFC's expectations these rows implement.
Run ``python tests/sip/test_conformance.py`` to print the table for the docs.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from limen.sip import Request, Response, SipParseError, SipUri, StreamFramer, parse_message
from limen.sip.validate import check_request

DATA = Path(__file__).resolve().parents[3] / "shared" / "testdata"
if not DATA.exists():  # pragma: no cover - layout of a checkout next to ../shared
    DATA = Path("/work/shared/testdata")

SUPPORTED = frozenset({"100rel", "timer", "replaces", "path", "outbound", "gruu"})
OK = "parse"
DROP = "drop"

# file: (parse outcome: OK | DROP | status of the SipParseError, UAS answer after checks)
RFC4475: dict[str, tuple[str | int, int | None]] = {
    "wsinv.dat": (OK, None),
    "intmeth.dat": (OK, 501),
    "esc01.dat": (OK, None),
    "escnull.dat": (OK, None),
    "esc02.dat": (OK, 501),
    "lwsdisp.dat": (OK, None),
    "longreq.dat": (OK, None),
    "dblreq.dat": (OK, None),
    "semiuri.dat": (OK, None),
    "transports.dat": (OK, None),
    "mpart01.dat": (OK, None),
    "unreason.dat": (OK, None),
    "noreason.dat": (OK, None),
    "badinv01.dat": (400, None),
    "clerr.dat": (400, None),
    "ncl.dat": (400, None),
    "scalar02.dat": (400, None),
    "scalarlg.dat": (DROP, None),
    "quotbal.dat": (400, None),
    "ltgtruri.dat": (400, None),
    "lwsruri.dat": (400, None),
    "lwsstart.dat": (400, None),
    "trws.dat": (400, None),
    "escruri.dat": (400, None),
    # "may reject (only if Date matters)": Date means nothing to Limen, so it is ignored.
    "baddate.dat": (OK, None),
    "regbadct.dat": (OK, 400),  # Contact is parsed on demand: refused by the checks
    "badaspec.dat": (400, None),
    "baddn.dat": (400, None),
    "badvers.dat": (505, None),
    "mismatch01.dat": (400, None),
    "mismatch02.dat": (400, None),  # 501 or 400; the CSeq mismatch is found first
    "bigcode.dat": (DROP, None),
    "badbranch.dat": (OK, None),  # RFC 2543 matching in the transaction layer
    "insuf.dat": (400, None),
    "unkscm.dat": (OK, 416),
    "novelsc.dat": (OK, 416),
    "unksm2.dat": (OK, 400),
    "bext01.dat": (OK, 420),
    "invut.dat": (OK, 415),
    "regaut01.dat": (OK, None),  # the registrar challenges; unknown scheme ignored
    "multi01.dat": (400, None),
    "mcl01.dat": (400, None),
    "bcast.dat": (OK, None),  # a response; no client transaction matches: dropped there
    "zeromf.dat": (OK, None),  # OPTIONS with Max-Forwards 0: answered by us (§16.3)
    "cparam01.dat": (OK, None),
    "cparam02.dat": (OK, None),
    "regescrt.dat": (OK, None),
    "sdp01.dat": (OK, 406),
    "inv2543.dat": (OK, None),
}

RFC5118: dict[str, tuple[str | int, int | None]] = {
    "ipv6-good": (OK, None),
    "ipv6-bad": (400, None),
    "port-ambiguous": (OK, None),
    "port-unambiguous": (OK, None),
    "via-received-param-with-delim": (OK, None),
    "via-received-param-no-delim": (OK, None),
    "ipv6-in-sdp": (OK, None),
    "mult-ip-in-header": (OK, None),
    "mult-ip-in-sdp": (OK, None),
    "ipv4-mapped-ipv6": (OK, None),
    "ipv6-bug-abnf-3-colons": (OK, None),
    "ipv6-correct-abnf-2-colons": (OK, None),
}


def load_4475(name: str) -> bytes:
    data = (DATA / "rfc4475" / name).read_bytes()
    if name == "baddn.dat":
        # The RFC's archive lacks the final empty line (see testdata/README.md); add it
        # so that the test checks the display name, not truncation.
        data += b"\r\n"
    return data


def load_5118(name: str) -> bytes:
    """Normalise as testdata/README.md says: CR LF, the empty line, true Content-Length."""
    text = (DATA / "rfc5118" / name).read_bytes().replace(b"\r\n", b"\n")
    head, sep, body = text.partition(b"\n\n")
    if not sep:
        head, body = text.rstrip(b"\n"), b""
    body = body.replace(b"\n", b"\r\n")
    head = re.sub(rb"(?im)^(content-length|l)[ \t]*:.*$", b"Content-Length: %d" % len(body), head)
    return head.replace(b"\n", b"\r\n") + b"\r\n\r\n" + body


def outcome(data: bytes) -> tuple[str | int, int | None]:
    try:
        msg = parse_message(data)
    except SipParseError as exc:
        return (DROP if data.startswith(b"SIP/") else exc.status), None
    if isinstance(msg, Response):
        return OK, None
    rejection = check_request(msg, supported=SUPPORTED)
    return OK, (None if rejection is None else rejection.status)


def test_manifests_are_covered() -> None:
    for corpus, table in (("rfc4475", RFC4475), ("rfc5118", RFC5118)):
        with (DATA / corpus / "MANIFEST.tsv").open() as f:
            files = {row["file"] for row in csv.DictReader(f, delimiter="\t")}
        assert files == set(table), corpus


@pytest.mark.parametrize("name", sorted(RFC4475))
def test_rfc4475(name: str) -> None:
    assert outcome(load_4475(name)) == RFC4475[name]


@pytest.mark.parametrize("name", sorted(RFC5118))
def test_rfc5118(name: str) -> None:
    assert outcome(load_5118(name)) == RFC5118[name]


@pytest.mark.parametrize("name", [n for n, (p, _) in RFC4475.items() if p == OK])
def test_rfc4475_valid_round_trip(name: str) -> None:
    data = load_4475(name)
    msg = parse_message(data)
    assert bytes(msg) == data[: len(bytes(msg))]
    # A re-serialised copy (every header rewritten from its parsed value) parses the same.
    clone = msg.copy()
    clone.replace_fields((f.name, f.value) for f in msg.fields)
    again = parse_message(bytes(clone))
    assert again.call_id == msg.call_id and again.cseq == msg.cseq
    assert [str(v) for v in again.via] == [str(v) for v in msg.via]
    assert again.body == msg.body


def _framed(data: bytes) -> bytes:
    """The message as a stream carries it: Content-Length set to the body's real size."""
    msg = parse_message(data)
    msg.body = msg.body  # rewrites Content-Length from the body actually present
    return bytes(msg)


@pytest.mark.parametrize("name", [n for n, (p, _) in RFC4475.items() if p == OK])
def test_rfc4475_byte_by_byte_through_framer_and_with_trailing_data(name: str) -> None:
    wire = _framed(load_4475(name))
    expected = parse_message(wire)
    framer = StreamFramer()
    got: list[object] = []
    for i in range(len(wire)):
        framer.feed(wire[i : i + 1])
        while (event := framer.next_event()) is not None:
            got.append(event)
    assert got == [wire]
    # Trailing octets after the announced body are not part of the message (§18.3).
    trailing = parse_message(wire + b"OPTIONS sip:x SIP/2.0\r\n\r\n")
    assert bytes(trailing) == bytes(expected) == wire


def test_semantics_in_detail() -> None:
    dbl = parse_message(load_4475("dblreq.dat"))
    assert dbl.body == b"" and b"INVITE" not in bytes(dbl)
    esc = parse_message(load_4475("escnull.dat"))
    aors = {c.sip_uri.aor for c in esc.contacts}
    assert len(aors) == 2
    c1 = parse_message(load_4475("cparam01.dat")).contacts[0]
    assert "unknownparam" in c1.params and isinstance(c1.uri, SipUri)
    assert "unknownparam" not in c1.uri.params
    c2 = parse_message(load_4475("cparam02.dat")).contacts[0]
    assert isinstance(c2.uri, SipUri) and "unknownparam" in c2.uri.params
    rt = parse_message(load_4475("regescrt.dat")).contacts[0]
    assert isinstance(rt.uri, SipUri) and rt.uri.headers == "Route=%3Csip:sip.example.com%3E"
    bext = parse_message(load_4475("bext01.dat"))
    assert isinstance(bext, Request)
    rejection = check_request(bext, supported=SUPPORTED)
    assert rejection is not None
    assert dict(rejection.headers)["Unsupported"] == (
        "noProxiesSupportThis, norDoAnyProxiesSupportThis, "
        "nothingSupportsThis, nothingSupportsThisEither"
    )
    amb = parse_message(load_5118("port-ambiguous"))
    assert isinstance(amb, Request) and isinstance(amb.uri, SipUri)
    assert (amb.uri.host, amb.uri.port) == ("[2001:db8::10:5070]", None)
    unamb = parse_message(load_5118("port-unambiguous"))
    assert isinstance(unamb.uri, SipUri)  # type: ignore[union-attr]
    assert (unamb.uri.host, unamb.uri.port) == ("[2001:db8::10]", 5070)  # type: ignore[union-attr]
    multi = parse_message(load_5118("mult-ip-in-header"))
    assert [(v.host, v.port) for v in multi.via] == [
        ("[2001:db8::9:1]", 6050),
        ("192.0.2.1", None),
        ("[2001:db8::9:255]", None),
    ]
    assert multi.via[2].received == "192.0.2.200"  # IPv4 received on an IPv6 hop


def table() -> str:
    lines = ["| corpus | file | class | expected | got |", "|---|---|---|---|---|"]
    for corpus, table_, loader in (
        ("rfc4475", RFC4475, load_4475),
        ("rfc5118", RFC5118, load_5118),
    ):
        with (DATA / corpus / "MANIFEST.tsv").open() as f:
            classes = {row["file"]: row["class"] for row in csv.DictReader(f, delimiter="\t")}
        for name in sorted(table_):
            want = table_[name]
            got = outcome(loader(name))

            def show(o: tuple[str | int, int | None]) -> str:
                return str(o[0]) if o[1] is None else f"{o[0]} → {o[1]}"

            lines.append(f"| {corpus} | {name} | {classes[name]} | {show(want)} | {show(got)} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(table())
