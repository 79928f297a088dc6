"""Source credentials, encrypted at rest with Fernet (AES-128-CBC + HMAC-SHA256).

The key is ``SPIRAL_SECRET_KEY``; with the embedded database and no key given, one is generated
once and kept in ``SPIRAL_DATA_DIR/secret.key`` (mode 0600). Plaintext credentials exist only in
memory, for the length of a request to the source: they are never returned, logged or audited.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import orjson
from cryptography.fernet import Fernet, InvalidToken

from ..config import Settings

__all__ = ["CredentialError", "SecretBox", "load_secret_box", "load_secret_key"]

KEY_FILE = "secret.key"


class CredentialError(ValueError):
    """Credentials cannot be sealed or opened; the message never contains them."""


class SecretBox:
    """Seals and opens credential dicts with one Fernet key."""

    __slots__ = ("_fernet",)

    def __init__(self, key: str | bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError):
            raise CredentialError(
                "the secret key is not a valid Fernet key (32 url-safe base64-encoded bytes)"
            ) from None

    def seal(self, credentials: dict[str, Any]) -> bytes:
        return self._fernet.encrypt(orjson.dumps(credentials))

    def open(self, sealed: bytes) -> dict[str, Any]:
        try:
            return orjson.loads(self._fernet.decrypt(sealed))
        except InvalidToken:
            # Wrong key (SPIRAL_SECRET_KEY changed) or tampered bytes: say which fix applies.
            raise CredentialError(
                "the stored credentials cannot be decrypted with this SPIRAL_SECRET_KEY; "
                "use the key they were saved with, or remove and add the source again"
            ) from None

    def __repr__(self) -> str:
        return "SecretBox(<key hidden>)"


def _key_file(data_dir: Path) -> bytes:
    path = data_dir / KEY_FILE
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        # O_EXCL: two processes starting together never both write a key; 0600 from creation,
        # so the key is never readable by others even for an instant.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        key = path.read_bytes().strip()
        if not key:
            raise CredentialError(f"{path} is empty; remove it or set SPIRAL_SECRET_KEY") from None
        return key
    key = Fernet.generate_key()
    with os.fdopen(fd, "wb") as out:
        out.write(key + b"\n")
    return key


def load_secret_box(settings: Settings) -> SecretBox:
    """The box for this process: from SPIRAL_SECRET_KEY, or the embedded database's key file."""
    return SecretBox(load_secret_key(settings))


def load_secret_key(settings: Settings) -> str | bytes:
    """The installation's secret (a Fernet key): SPIRAL_SECRET_KEY, or the embedded database's
    key file; CredentialError when there is neither."""
    if settings.spiral_secret_key is not None:
        return str(settings.spiral_secret_key)
    if settings.database_url is None and settings.admin_database_url is None:
        return _key_file(settings.data_dir)
    raise CredentialError(
        "SPIRAL_SECRET_KEY is needed to keep source credentials with your own PostgreSQL; make "
        "one with: python -c 'from cryptography.fernet import Fernet; "
        "print(Fernet.generate_key().decode())'"
    )
