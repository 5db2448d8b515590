"""The two sides of the gateway (a module of its own so that the media interface and the
gateway's context can both name them without importing each other)."""

from __future__ import annotations

from enum import StrEnum


class Side(StrEnum):
    SET = "set"  # toward the phones
    ICP = "icp"  # toward the PBX
