"""The connection table: TCP/TLS connections by id and by (transport, remote address).

Reuse matters for SIP behind NAT: a request toward a phone that registered over TCP or
TLS must go back over that phone's connection, because the phone cannot be dialled
(RFC 5626 §3.2, RFC 3261 §18.2.2). The registrar remembers the connection id from the
message's :class:`~limen.sip.addressing.Source`; the table finds it again.

The table also keeps the counts the limits need (total, and inbound per source IP).
Pure bookkeeping: no sockets, so it can be tested with plain objects.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar

from limen.sip.addressing import Address, Transport
from limen.transport.addresses import canonical_host


class TableEntry(Protocol):
    """What the table needs to know of a connection."""

    @property
    def transport(self) -> Transport: ...

    @property
    def remote(self) -> Address: ...

    @property
    def inbound(self) -> bool: ...

    @property
    def usable(self) -> bool:
        """Open, handshake done: bytes written now reach the peer."""
        ...


C = TypeVar("C", bound=TableEntry)


class ConnectionTable(Generic[C]):
    """Connections by id (ids start at 1 and are never reused within a process)."""

    def __init__(self) -> None:
        self._next_id = 1
        self._by_id: dict[int, C] = {}
        # (transport, remote) -> ids, oldest first; the newest usable one is preferred.
        self._by_address: dict[tuple[Transport, Address], list[int]] = {}
        self._inbound_per_host: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def __iter__(self) -> Iterator[C]:
        return iter(list(self._by_id.values()))

    def inbound_from(self, host: str) -> int:
        """Inbound connections currently open from the IP address ``host``."""
        return self._inbound_per_host.get(canonical_host(host), 0)

    def add(self, conn: C) -> int:
        conn_id = self._next_id
        self._next_id += 1
        self._by_id[conn_id] = conn
        self._by_address.setdefault(self._key(conn), []).append(conn_id)
        if conn.inbound:
            host = canonical_host(conn.remote[0])
            self._inbound_per_host[host] = self._inbound_per_host.get(host, 0) + 1
        return conn_id

    def remove(self, conn_id: int) -> C | None:
        conn = self._by_id.pop(conn_id, None)
        if conn is None:
            return None
        key = self._key(conn)
        ids = self._by_address.get(key)
        if ids is not None:
            ids.remove(conn_id)
            if not ids:
                del self._by_address[key]
        if conn.inbound:
            host = canonical_host(conn.remote[0])
            left = self._inbound_per_host.get(host, 0) - 1
            if left > 0:
                self._inbound_per_host[host] = left
            else:
                self._inbound_per_host.pop(host, None)
        return conn

    def get(self, conn_id: int) -> C | None:
        """The connection with this id if it is still open and usable."""
        conn = self._by_id.get(conn_id)
        return conn if conn is not None and conn.usable else None

    def find(self, transport: Transport, remote: Address) -> C | None:
        """The newest usable connection of ``transport`` to exactly ``remote``."""
        ids = self._by_address.get((transport, (canonical_host(remote[0]), remote[1])))
        if not ids:
            return None
        for conn_id in reversed(ids):
            conn = self._by_id[conn_id]
            if conn.usable:
                return conn
        return None

    @staticmethod
    def _key(conn: TableEntry) -> tuple[Transport, Address]:
        return (conn.transport, (canonical_host(conn.remote[0]), conn.remote[1]))
