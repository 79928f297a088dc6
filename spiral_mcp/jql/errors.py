"""The one failure of the JQL compiler: a message that names where, what and what instead."""

from __future__ import annotations

__all__ = ["JqlError", "show_found"]

_SHOW_LIMIT = 40


def show_found(found: str) -> str:
    """Found text as an error shows it: quoted, cut at 40 characters."""
    if not found:
        return "end of query"
    if len(found) > _SHOW_LIMIT:
        found = found[:_SHOW_LIMIT] + "..."
    return f"'{found}'"


class JqlError(ValueError):
    """A JQL query that cannot be compiled.

    ``position`` is the 0-based character offset of the problem, ``found`` the text found there
    ("" at the end of the query) and ``expected`` what would have been accepted. The message reads
    ``at position 17: found 'AND', expected a value``; a few errors carry their own ``detail``
    instead (``at position 11: currentUser() needs an API key that acts for a user``).
    """

    def __init__(self, position: int, found: str, expected: str, detail: str | None = None) -> None:
        self.position = position
        self.found = found
        self.expected = expected
        self.detail = detail
        text = detail if detail else f"found {show_found(found)}, expected {expected}"
        super().__init__(f"at position {position}: {text}")
