"""Splits JQL text into tokens: words, quoted strings, operators and punctuation."""

from __future__ import annotations

import re
from dataclasses import dataclass

from spiral_mcp.jql.errors import JqlError

__all__ = ["Token", "tokenize"]

# Token kinds.
WORD = "WORD"  # a bare word: field, keyword, function name or unquoted value
STRING = "STRING"  # a quoted value
OP = "OP"  # = != ~ !~ > >= < <=
LPAREN = "("
RPAREN = ")"
COMMA = ","
AMPS = "&&"  # Jira's spelling of AND
PIPES = "||"  # Jira's spelling of OR
BANG = "!"  # Jira's spelling of NOT
EOF = "EOF"

# Characters a bare word may hold besides letters and digits: enough for keys (PROJ-1), dates
# (2026-01-31), relative dates (-7d, +1d), emails (a.b@c.io) and snake_case values. Anything else
# must be quoted, which keeps the grammar unambiguous.
_WORD_EXTRA = frozenset("_-.@+:/*?$#")
_ESCAPES = {'"': '"', "'": "'", "\\": "\\", "n": "\n", "t": "\t", "r": "\r", " ": " "}

# PostgreSQL text holds neither NUL nor half a surrogate pair; refused here with a position rather
# than by the database's driver with its own words.
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_STORABLE = "a character other than NUL (\\u0000) or half a surrogate pair (\\ud800-\\udfff)"
_HEX = frozenset("0123456789abcdefABCDEF")


@dataclass(frozen=True)
class Token:
    kind: str
    text: str  # the source text (for quoted strings: the value, unescaped)
    pos: int

    def is_keyword(self, *words: str) -> bool:
        """True for a bare word equal (case-insensitively) to one of ``words``."""
        return self.kind == WORD and self.text.upper() in words


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch in _WORD_EXTRA


def _unstorable(ch: str, pos: int) -> JqlError:
    return JqlError(pos, f"\\u{ord(ch):04x}", _STORABLE)


def _hex4(jql: str, at: int) -> int | None:
    digits = jql[at : at + 4]
    return int(digits, 16) if len(digits) == 4 and all(c in _HEX for c in digits) else None


def _unicode_escape(jql: str, at: int) -> tuple[str, int] | None:
    """The character of the ``\\uXXXX`` escape at ``at`` and the index after it (two escapes
    that make a surrogate pair, as JSON writes one, are one character); None if there is none."""
    code = _hex4(jql, at + 2)
    if code is None:
        return None
    end = at + 6
    if 0xD800 <= code < 0xDC00 and jql.startswith("\\u", end):
        low = _hex4(jql, end + 2)
        if low is not None and 0xDC00 <= low < 0xE000:
            return chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)), end + 6
    char = chr(code)
    if _UNSTORABLE.match(char):
        raise _unstorable(char, at)
    return char, end


def _read_string(jql: str, start: int) -> tuple[str, int]:
    """Read the quoted string opening at ``start``; return its value and the index after it."""
    quote = jql[start]
    out: list[str] = []
    i = start + 1
    while i < len(jql):
        ch = jql[i]
        if ch == quote:
            return "".join(out), i + 1
        if ch == "\\":
            if i + 1 >= len(jql):
                break
            nxt = jql[i + 1]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                i += 2
                continue
            if nxt == "u" and (escaped := _unicode_escape(jql, i)) is not None:
                char, i = escaped
                out.append(char)
                continue
            raise JqlError(i, jql[i : i + 2],
                           "an escape: \\\", \\', \\\\, \\n, \\t, \\r, \\<space> or \\uXXXX")
        out.append(ch)
        i += 1
    raise JqlError(len(jql), "", f"{quote} to close the string opened at position {start}")


def tokenize(jql: str) -> list[Token]:
    """Tokenize ``jql``; the list always ends with an EOF token at ``len(jql)``."""
    if (bad := _UNSTORABLE.search(jql)) is not None:
        raise _unstorable(bad.group(), bad.start())
    tokens: list[Token] = []
    i, n = 0, len(jql)
    while i < n:
        ch = jql[i]
        if ch.isspace():
            i += 1
        elif ch in "\"'":
            value, end = _read_string(jql, i)
            tokens.append(Token(STRING, value, i))
            i = end
        elif ch in "(),":
            tokens.append(Token(ch, ch, i))
            i += 1
        elif ch in "<>":
            op = ch + "=" if jql.startswith("=", i + 1) else ch
            tokens.append(Token(OP, op, i))
            i += len(op)
        elif ch in "=~":
            tokens.append(Token(OP, ch, i))
            i += 1
        elif ch == "!":
            if i + 1 < n and jql[i + 1] in "=~":
                tokens.append(Token(OP, jql[i : i + 2], i))
                i += 2
            else:
                tokens.append(Token(BANG, ch, i))
                i += 1
        elif ch in "&|" and jql.startswith(ch * 2, i):
            tokens.append(Token(AMPS if ch == "&" else PIPES, ch * 2, i))
            i += 2
        elif _is_word_char(ch):
            start = i
            while i < n and _is_word_char(jql[i]):
                i += 1
            tokens.append(Token(WORD, jql[start:i], start))
        else:
            raise JqlError(i, ch, "a field, operator or value (quote values that contain "
                                  "special characters)")
    tokens.append(Token(EOF, "", n))
    return tokens
