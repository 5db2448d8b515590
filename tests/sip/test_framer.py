"""Stream framing (RFC 3261 §18.3) and CRLF keepalives (RFC 5626 §3.5.1)."""

from __future__ import annotations

import pytest

from limen.sip import PING, PONG, SipParseError, StreamFramer, parse_message

MSG = (
    b"MESSAGE sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n"
    b"From: <sip:b@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\nCall-ID: c\r\n"
    b"CSeq: 1 MESSAGE\r\nl: 14\r\n\r\nHello\r\n\r\nWorld"
)  # the body contains an empty line on purpose: only Content-Length ends it


def drain(framer: StreamFramer) -> list[object]:
    out: list[object] = []
    while (event := framer.next_event()) is not None:
        out.append(event)
    return out


def test_whole_message() -> None:
    f = StreamFramer()
    f.feed(MSG)
    assert drain(f) == [MSG]
    assert parse_message(MSG).body == b"Hello\r\n\r\nWorld"


def test_byte_by_byte() -> None:
    f = StreamFramer()
    events: list[object] = []
    stream = b"\r\n\r\n" + MSG + MSG + b"\r\n\r\n"
    for i in range(len(stream)):
        f.feed(stream[i : i + 1])
        events.extend(drain(f))
    assert events == [PING, MSG, MSG, PING]
    assert f.buffered == 0


def test_several_messages_and_trailing_partial() -> None:
    f = StreamFramer()
    f.feed(MSG + MSG + MSG[:20])
    assert drain(f) == [MSG, MSG]
    f.feed(MSG[20:])
    assert drain(f) == [MSG]


def test_pong() -> None:
    f = StreamFramer()
    f.feed(b"\r\n" + MSG)
    assert drain(f) == [PONG, MSG]


def test_oversize_message_fails() -> None:
    f = StreamFramer(max_message_size=100)
    f.feed(MSG)
    with pytest.raises(SipParseError) as info:
        f.next_event()
    assert info.value.status == 513
    with pytest.raises(SipParseError):
        f.feed(b"more")


def test_endless_headers_fail() -> None:
    f = StreamFramer(max_message_size=1000)
    f.feed(b"OPTIONS sip:a SIP/2.0\r\n" + b"X: y\r\n" * 200)
    with pytest.raises(SipParseError):
        drain(f)


@pytest.mark.parametrize(
    "bad",
    [
        MSG.replace(b"l: 14", b"l: -14"),
        MSG.replace(b"l: 14", b"l: 14\r\nContent-Length: 14"),
        MSG.replace(b"l: 14", b"l: twelve"),
    ],
)
def test_bad_content_length(bad: bytes) -> None:
    f = StreamFramer()
    f.feed(bad)
    with pytest.raises(SipParseError):
        f.next_event()


def test_missing_content_length_means_no_body() -> None:
    f = StreamFramer()
    head = MSG.split(b"\r\n\r\n")[0].replace(b"\r\nl: 14", b"") + b"\r\n\r\n"
    f.feed(head + MSG)
    assert drain(f) == [head, MSG]
