"""The teleworker logic: set-side registrar, ICP-side registration, call controller,
keepalives, policy (DESIGN.md). For now: the day-one responder of :mod:`.options`."""

from limen.gateway.options import OptionsResponder

__all__ = ["OptionsResponder"]
