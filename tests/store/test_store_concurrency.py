"""Global options are validated as a whole: two concurrent changes of different options
must not both be checked against the old set (issue 14), on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from pydantic import ValidationError

from limen.store import Store


def test_concurrent_option_changes_keep_the_whole_set_valid(store: Store) -> None:
    changes = [{"srtp_port_min": 30000}, {"srtp_port_max": 25000}]
    for _round in range(8):
        store.options.reset(["srtp_port_min", "srtp_port_max"])
        start = threading.Barrier(len(changes))

        def change(values: dict[str, int], start: threading.Barrier = start) -> bool:
            start.wait()
            try:
                store.options.set(values)
            except ValidationError:
                return False
            return True

        with ThreadPoolExecutor(len(changes)) as pool:
            applied = list(pool.map(change, changes))
        # Each is valid alone, not together: exactly one may win.
        assert applied.count(True) == 1, applied
        options = store.options.get()  # validates the stored set
        assert options.srtp_port_min < options.srtp_port_max
