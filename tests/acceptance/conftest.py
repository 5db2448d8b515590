"""Fixtures for the acceptance tests (issue 4): one namespace lab per session.

The helpers of the loopback peer tests live in ``tests/gateway`` and ``tests/peers``
(folders without ``__init__.py``); they are put on ``sys.path`` here so the acceptance
modules import them by name instead of copying them.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

_TESTS = Path(__file__).resolve().parent.parent
for _folder in ("gateway", "peers"):
    if str(_TESTS / _folder) not in sys.path:
        sys.path.insert(0, str(_TESTS / _folder))

from acc_lab import Lab, open_lab  # noqa: E402


@pytest.fixture(scope="session")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Namespaces wan/dmz/lan/home/homepc, Kamailio (PBX) in lan, ``limen serve`` in dmz."""
    with open_lab(tmp_path_factory.mktemp("acc-lab")) as running:
        yield running
