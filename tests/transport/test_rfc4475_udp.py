"""RFC 4475 over UDP: every torture message sent to Limen gets the expected answer, or silence.

The table is what Limen answers on day one: parse errors from ``limen.sip`` answered by
``limen.sip.rescue`` (400, 505), semantic refusals from ``limen.sip.validate`` (416, 420,
415, 406, 400), 200 for the OPTIONS that pass, 501 for the methods not implemented yet,
nothing for responses. See /work/shared/testdata/rfc4475/MANIFEST.tsv for the RFC's words.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from siptest_client import UdpClient, request, status_of

from limen.app import RunningApp
from limen.sip.addressing import Transport

pytestmark = pytest.mark.timeout(60)

RFC4475 = Path("/work/shared/testdata/rfc4475")
SILENT = None

EXPECTED: dict[str, int | None] = {
    # 3.1.1 valid messages
    "wsinv.dat": 481,  # has a To tag: a re-INVITE for a dialog that does not exist (§12.2.2)
    "intmeth.dat": 501,  # unknown method (with Allow)
    "esc01.dat": 407,  # INVITE: challenged (set side, limen.gateway.calls)
    "escnull.dat": 403,  # REGISTER over UDP: off in the default options (registrar)
    "esc02.dat": 501,  # unknown method RE%47IST%45R
    "lwsdisp.dat": 407,  # OPTIONS to a user, from no registration binding: challenged
    "longreq.dat": 407,  # INVITE: challenged
    # REGISTER over UDP (off by default: 403); the trailing INVITE octets are ignored.
    "dblreq.dat": 403,
    "semiuri.dat": 407,  # OPTIONS to a user, from no registration binding: challenged
    "transports.dat": 407,  # OPTIONS to a user, from no registration binding: challenged
    "mpart01.dat": 407,  # MESSAGE from no binding: challenged (multipart body frames fine)
    "unreason.dat": SILENT,  # response
    "noreason.dat": SILENT,  # response
    # 3.1.2 invalid messages
    "badinv01.dat": 400,
    "clerr.dat": 400,
    "ncl.dat": 400,
    "scalar02.dat": 400,
    "scalarlg.dat": SILENT,  # response
    "quotbal.dat": 400,
    "ltgtruri.dat": 400,
    "lwsruri.dat": 400,
    "lwsstart.dat": 400,
    "trws.dat": 400,
    "escruri.dat": 400,
    "baddate.dat": 407,  # INVITE: the bad Date is ignored; challenged
    "regbadct.dat": 400,
    "badaspec.dat": 400,
    "baddn.dat": 400,
    "badvers.dat": 505,
    "mismatch01.dat": 400,
    "mismatch02.dat": 400,  # RFC: 501, 400 also acceptable (the CSeq mismatch is found first)
    "bigcode.dat": SILENT,  # response
    # 3.2 / 3.3 / 3.4 semantically bad
    "badbranch.dat": 407,  # OPTIONS without magic cookie: RFC 2543 matching, challenged
    "insuf.dat": 400,  # no From/To/Call-ID: answered with Via and CSeq
    "unkscm.dat": 416,
    "novelsc.dat": 416,
    "unksm2.dat": 400,  # REGISTER whose To is not a SIP AOR
    "bext01.dat": 420,
    "invut.dat": 415,
    "regaut01.dat": 403,  # REGISTER over UDP: off in the default options (registrar)
    "multi01.dat": 400,
    "mcl01.dat": 400,
    "bcast.dat": SILENT,  # response
    "zeromf.dat": 200,  # OPTIONS with Max-Forwards 0: answered by the UAS itself
    "cparam01.dat": 403,  # REGISTER over UDP: off in the default options (registrar)
    "cparam02.dat": 403,  # REGISTER over UDP: off in the default options (registrar)
    "regescrt.dat": 403,  # REGISTER over UDP: off in the default options (registrar)
    "sdp01.dat": 406,
    "inv2543.dat": 407,  # INVITE, RFC 2543 style: accepted, challenged
}


def test_table_covers_the_manifest() -> None:
    with (RFC4475 / "MANIFEST.tsv").open() as f:
        files = {row["file"] for row in csv.DictReader(f, delimiter="\t")}
    assert files == set(EXPECTED)


@pytest.mark.parametrize(("name", "expected"), sorted(EXPECTED.items()))
async def test_rfc4475_over_udp(limen: RunningApp, name: str, expected: int | None) -> None:
    address = ("127.0.0.1", limen.port(Transport.UDP))
    client = UdpClient()
    try:
        await client.send((RFC4475 / name).read_bytes(), address)
        probe = request("OPTIONS", via_port=client.port)
        await client.send(probe, address)
        # Answers come back in order: the torture message's (if any), then the probe's.
        # An INVITE is answered 100 Trying by its server transaction first (§17.2.1).
        first = await client.recv()
        while status_of(first) == 100:
            first = await client.recv()
        if expected is SILENT:
            assert b"z9hG4bK-test-" in first, first  # the probe's answer came first
        else:
            assert status_of(first) == expected, first.decode(errors="replace")
            assert b"z9hG4bK-test-" not in first
            probe_answer = await client.recv()
            assert b"z9hG4bK-test-" in probe_answer  # exactly one answer, then the probe's
    finally:
        client.close()
