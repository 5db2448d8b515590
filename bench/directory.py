"""CPU of keeping the gateway's Directory in step with the store, 10,000 devices.

Run: ``flock /tmp/limen-heavy.lock .venv/bin/python bench/directory.py [--devices N]``.

Prints the CPU time (this process, ``time.process_time``) of a whole load and of the
incremental update after one device's edit, a rename, a delete, an ICP edit and an options
change, each as the running gateway does it (``Directory.fetch`` + ``Directory.apply``),
on a SQLite store in a temporary folder. Aim (issue 13): a one-device edit costs far less
than the 0.5 to 0.7 s of the whole reload it replaces.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert, select  # noqa: E402

from limen.config import Settings  # noqa: E402
from limen.gateway.context import Directory  # noqa: E402
from limen.store import Change, open_store  # noqa: E402
from limen.store import models as m  # noqa: E402
from limen.store.schemas import DeviceUpdate, IcpCreate, IcpUpdate  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument(
        "--load-only", action="store_true", help="the whole load only (older Limen versions)"
    )
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="limen-bench-dir-"))
    settings = Settings(config_path=str(folder / "limen.toml"), data_dir=str(folder / "data"))
    store = open_store(settings)
    store.icps.create(IcpCreate(name="pbx", address="10.0.0.2"))
    with store.sessions() as s, s.begin():
        icp_id = s.scalar(select(m.Icp.id))
        rows = []
        for n in range(args.devices):
            rows.append(
                {
                    "guid": str(uuid.uuid4()),
                    "setside_username": f"p{n}",
                    "setside_password_enc": store.box.encrypt(f"set-p{n}"),
                    "icpside_username": f"icpp{n}",
                    "icpside_password_enc": store.box.encrypt(f"icp-pw-{n}"),
                    "icp_id": icp_id,
                    "description": "",
                }
            )
        s.execute(insert(m.SipDevice), rows)
    changes: list[Change] = []
    store.on_change = changes.append

    started = time.process_time()
    directory = Directory.load(store)
    full = time.process_time() - started
    print(f"whole load, {len(directory.devices)} devices: {full * 1000:.0f} ms CPU")
    if args.load_only:
        return 0

    def step(name: str, change: Callable[[], object]) -> None:
        changes.clear()
        change()
        started = time.process_time()
        patch = directory.fetch(store, list(changes))
        fetched = time.process_time()
        directory.apply(patch)
        took = time.process_time() - started
        print(
            f"{name}: {took * 1000:.1f} ms CPU, {(took - (fetched - started)) * 1000:.1f} ms "
            f"of it on the event loop ({full / took:.0f}x less than a whole load)"
        )

    step("one device edited", lambda: store.devices.update("p5", DeviceUpdate(max_calls=2)))
    step(
        "one device renamed",
        lambda: store.devices.update("p6", DeviceUpdate(setside_username="q6")),
    )
    step("one device deleted", lambda: store.devices.delete("p7"))
    step("ICP edited (renamed)", lambda: store.icps.update("pbx", IcpUpdate(name="pbx2")))
    step("an option changed", lambda: store.options.set({"heartbeat_interval": 45}))
    store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
