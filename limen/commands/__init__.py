"""Command groups of the ``limen`` CLI that work on the store directly (no server needed).

Attached in :mod:`limen.cli` with ``app.add_typer``. Every command takes ``--config``
and ``--json``.
"""
