"""Secrets at rest.

- SIP passwords (set side and ICP side) and OAuth secrets are needed in clear at run
  time (digest authentication, HMAC signatures), so they are encrypted with Fernet
  (AES-128-CBC + HMAC-SHA256) under a key kept in a file outside the database, created
  with mode 0600. A stolen database alone reveals none of them.
- Admin passwords are only ever verified, so they are hashed with argon2id.
- Admin bearer tokens (sessions, API tokens) are random 256-bit values; only their
  SHA-256 is stored.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import string
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.fernet import Fernet, InvalidToken

from limen.store.errors import StoreError


class SecretBox:
    """Encrypts and decrypts short strings with the store's key."""

    def __init__(self, key: bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError) as exc:
            raise StoreError(f"invalid secret key: {exc}") from exc

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode()
        except InvalidToken as exc:
            raise StoreError(
                "cannot decrypt a stored secret: the key file does not match this database"
            ) from exc


def create_key_file(path: Path) -> bytes:
    """Write a new Fernet key to ``path`` with mode 0600; refuse to overwrite one."""
    key = Fernet.generate_key()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key + b"\n")
    return key


def read_key_file(path: Path) -> bytes:
    try:
        return path.read_bytes().strip()
    except FileNotFoundError as exc:
        raise StoreError(f"secret key file {path} is missing (run `limen init`)") from exc
    except OSError as exc:  # a directory, no permission, an I/O error: one line, no trace
        raise StoreError(f"cannot read the secret key file {path}: {exc.strerror}") from exc


_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def random_password(length: int = 20) -> str:
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(length))


def random_hex(nbytes: int = 16) -> str:
    return secrets.token_hex(nbytes)


def random_verifier() -> str:
    """The 6-digit verifier an admin reads out to the PBX (seed figure 16)."""
    return f"{secrets.randbelow(1_000_000):06d}"
