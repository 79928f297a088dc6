"""Tokens verified recently, so that a client's many requests with one token cost one check.

Entries are keyed by the token's SHA-256 (the token itself is never held), live until a bound
each verifier sets (at most a minute, and never past the token's own expiry), and the least
recently used goes first past a fixed size.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from typing import Generic, TypeVar

__all__ = ["VerifiedTokens"]

T = TypeVar("T")


class VerifiedTokens(Generic[T]):
    """What was learnt verifying each token (a VerifiedToken, and what else its verifier needs
    to take it again), by the token's hash."""

    def __init__(self, *, size: int = 10_000) -> None:
        self._size = size
        self._entries: OrderedDict[bytes, tuple[float, T]] = OrderedDict()

    @staticmethod
    def key(token: str) -> bytes:
        return hashlib.sha256(token.encode()).digest()

    def get(self, key: bytes) -> T | None:
        """The token verified under ``key``, while its entry lives."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        until, verified = entry
        if time.time() >= until:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return verified

    def put(self, key: bytes, verified: T, *, until: float) -> None:
        """Keep ``verified`` until the epoch time ``until``."""
        self._entries[key] = (until, verified)
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)
