"""One-line explanations of the errors that stop ``limen serve`` (issue 11): a missing or
wrong key file, an unreadable configuration, a port in use, a bad certificate path.
Anything else is a bug and keeps its traceback."""

from __future__ import annotations

import errno
import ssl
import tomllib
from pathlib import Path

from pydantic import ValidationError


def config_error(path: Path, exc: BaseException) -> str | None:
    """The configuration file could not be read or does not validate."""
    if isinstance(exc, tomllib.TOMLDecodeError):
        return f"cannot read configuration {path}: not valid TOML ({exc})"
    if isinstance(exc, ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors()
        )
        return f"invalid configuration {path}: {problems}"
    if isinstance(exc, PermissionError):
        return f"cannot read configuration {path}: permission denied"
    if isinstance(exc, IsADirectoryError):
        return f"cannot read configuration {path}: it is a folder"
    if isinstance(exc, UnicodeDecodeError):
        return f"cannot read configuration {path}: not UTF-8 text"
    if isinstance(exc, OSError):
        return f"cannot read configuration {path}: {exc.strerror or exc}"
    return None


def startup_error(exc: BaseException, key_file: Path | None = None) -> str | None:
    """A start-up failure an administrator can fix, in one line; None for anything else."""
    from limen.store import StoreError

    if isinstance(exc, StoreError):
        text = str(exc)
        if key_file is not None and text.startswith("invalid secret key"):
            text = f"secret key file {key_file} is not a Limen key ({text}): restore it"
        return text
    if isinstance(exc, ssl.SSLError):
        return (
            f"cannot load a TLS certificate or key: {exc.reason or exc} (check sip.tls_cert / "
            "tls_key, provisioning.tls_cert / tls_key, api.tls_cert / tls_key)"
        )
    if isinstance(exc, FileNotFoundError):
        name = exc.filename or str(exc)
        return f"file not found: {name} (check the certificate paths in the configuration)"
    if isinstance(exc, PermissionError):
        return f"permission denied: {exc.filename or exc}"
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return f"port in use: {exc.strerror or exc} (another process holds it)"
    if isinstance(exc, RuntimeError) and "could not listen" in str(exc):
        return f"port in use or not bindable: {exc}"
    if isinstance(exc, ValueError) and ("tls_cert" in str(exc) or "certificate" in str(exc)):
        return str(exc)
    return None
