"""The ICP link tests (issue 15) reuse the Kamailio helpers of ``tests/gateway``."""

from __future__ import annotations

import sys
from pathlib import Path

_TESTS = Path(__file__).resolve().parent.parent
if str(_TESTS / "gateway") not in sys.path:
    sys.path.insert(0, str(_TESTS / "gateway"))
