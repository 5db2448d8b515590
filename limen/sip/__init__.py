"""Sans-IO SIP: messages, URIs, headers, digest auth, transactions, dialogs.

Bytes and ``now`` go in; events and bytes come out. Nothing here opens a socket, runs an
event loop or reads a clock (DESIGN.md, layer table).
"""

from limen.sip.addressing import Destination, Source, Transport
from limen.sip.dialog import Dialog, DialogId, DialogState, DialogTable
from limen.sip.errors import SipError, SipParseError, SipUsageError
from limen.sip.framer import PING, PONG, KeepAlivePing, KeepAlivePong, StreamFramer
from limen.sip.grammar import Params
from limen.sip.headers import (
    ContentType,
    CSeq,
    Event,
    NameAddr,
    RAck,
    Reason,
    Replaces,
    RetryAfter,
    SessionExpires,
    SubscriptionState,
    Via,
)
from limen.sip.message import HeaderField, Message, Request, Response, parse_message, reason_phrase
from limen.sip.transaction import TimerConfig, TransactionLayer
from limen.sip.uri import AbsoluteUri, SipUri, TelUri, Uri, parse_uri

__all__ = [
    "PING",
    "PONG",
    "AbsoluteUri",
    "CSeq",
    "ContentType",
    "Destination",
    "Dialog",
    "DialogId",
    "DialogState",
    "DialogTable",
    "Event",
    "HeaderField",
    "KeepAlivePing",
    "KeepAlivePong",
    "Message",
    "NameAddr",
    "Params",
    "RAck",
    "Reason",
    "Replaces",
    "Request",
    "Response",
    "RetryAfter",
    "SessionExpires",
    "SipError",
    "SipParseError",
    "SipUri",
    "SipUsageError",
    "Source",
    "StreamFramer",
    "SubscriptionState",
    "TelUri",
    "TimerConfig",
    "TransactionLayer",
    "Transport",
    "Uri",
    "Via",
    "parse_message",
    "parse_uri",
    "reason_phrase",
]
