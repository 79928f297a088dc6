"""Reading PostgreSQL's text form of a node tree, as ``debug_print_parse`` sends it.

``nodeToString`` writes ``{TAG :field value ...}`` for a node, ``(...)`` for a list, and bare
tokens for scalars, with one space between tokens and a backslash before every space, tab,
newline, brace, parenthesis or backslash in a string (a carriage return it leaves as it is). The
server then folds that text into lines of at most 78 bytes (``format_node_dump``): a fold drops a
space, or, where a line holds no space to fold at, cuts a token. The reader undoes the folds
exactly: it finds the text whose fold is the dump it was sent, deciding at each newline that
could be a string's own whether it is; a dump that more than one text of different tokens would
fold to (a cut token beside a dropped space) is refused rather than guessed at.

The reader is one pass over the tokens (a query's tree runs to thousands of them): it gives each
node with the scalar tokens of its own fields, a list written in a field (``(o 23 25)``) kept as
its tokens, a node written in a field given as a node of its own.
"""

from __future__ import annotations

import dataclasses
import re

__all__ = ["Node", "NodeDumpError", "fold", "read_node_dump"]

# format_node_dump's LINELEN.
_LINE_BYTES = 78
# A token: structure, or a run of anything else in which a backslash escapes the next byte;
# between tokens, what PostgreSQL's own reader (pg_strtok) takes for white space.
_TOKEN = re.compile(r"[{}()]|(?:[^ \n\t{}()\\]|\\.)[^ \n\t{}()\\]*(?:\\.[^ \n\t{}()\\]*)*",
                    re.DOTALL)
_TAG = re.compile(r"[A-Z_]+")
# How many ways of reading the newlines are tried before the dump is refused.
_MAX_READINGS = 4096


class NodeDumpError(ValueError):
    """The text is not a node tree this reader can be sure of."""


@dataclasses.dataclass(slots=True)
class Node:
    """One node: its tag (``FUNCEXPR``) and, for each field, the tokens written in it directly
    (``:constvalue 4 [ 1 0 0 0 ]`` gives ``4 [ 1 0 0 0 ]``); nodes inside are nodes of their
    own."""

    tag: str
    fields: dict[str, list[str]] = dataclasses.field(default_factory=dict)

    def scalar(self, name: str) -> str | None:
        """The field's single token, or None when absent or not a single token."""
        values = self.fields.get(name)
        return values[0] if values is not None and len(values) == 1 else None


def fold(text: bytes) -> bytes:
    """``format_node_dump``: ``text`` in lines of at most 78 bytes, each ending in a newline."""
    out: list[bytes] = []
    i = 0
    while True:
        line = text[i:i + _LINE_BYTES]
        i += len(line)
        if i >= len(text):
            break
        if text[i:i + 1] == b" ":
            i += 1  # the space after a full line is dropped
        else:
            k = line.rfind(b" ", 1)
            if k > 0:  # back up to the line's last space, dropped; the rest goes on the next
                i -= len(line) - k - 1
                line = line[:k]
        out.append(line)
    if line:
        out.append(line)
    return b"".join(piece + b"\n" for piece in out)


def _unfolded(dump: bytes) -> bytes:
    """The one text, as tokens go, whose fold is ``dump``. A newline is a fold unless it follows
    an odd run of backslashes, where it may be a string's own: each such newline is read both
    ways, as is a full line with no space to fold at (a cut token, or a space dropped after it);
    every reading whose fold gives the dump back must give the same tokens."""
    pieces = dump.split(b"\n")
    if pieces[-1]:
        raise NodeDumpError("the dump does not end its last line")
    last = len(pieces) - 2
    found: list[bytes] = []
    # Readings in progress: the next piece, the line so far, and the text before that line as
    # a chain of (earlier chain, bytes), so that a branch copies nothing.
    pending: list[tuple[int, bytes, tuple | None]] = [(0, b"", None)]
    tried = 0
    while pending:
        k, line, done = pending.pop()
        tried += 1
        if tried > _MAX_READINGS:
            raise NodeDumpError("too many ways to read the dump's lines")
        line += pieces[k]
        if len(line) > _LINE_BYTES:
            continue
        if k == last:
            found.append(_joined((done, line)))
            continue
        run = len(line) - len(line.rstrip(b"\\"))
        if run % 2 and len(line) < _LINE_BYTES:  # an escaped newline of a string's
            pending.append((k + 1, line + b"\n", done))
        if len(line) == _LINE_BYTES and b" " not in line[1:]:
            pending.append((k + 1, b"", (done, line)))
        pending.append((k + 1, b"", ((done, line), b" ")))
    valid = [text for text in found if fold(text) == dump]
    if not valid:
        raise NodeDumpError("the dump is not what the server folds")
    if len(valid) > 1 and len({tuple(_tokens_of(text)) for text in valid}) > 1:
        raise NodeDumpError("the dump's lines cannot be read one way only")
    return valid[0]


def _joined(chain: tuple | None) -> bytes:
    parts: list[bytes] = []
    while chain is not None:
        chain, part = chain
        parts.append(part)
    return b"".join(reversed(parts))


def _tokens_of(text: bytes) -> list[str]:
    tail = text.rstrip(b" \n\t")
    if (len(tail) - len(tail.rstrip(b"\\"))) % 2:
        raise NodeDumpError("a stray backslash at the end")  # the only byte no token takes
    return _TOKEN.findall(text.decode(errors="replace"))


def _tokens(dump: str) -> list[str]:
    return _tokens_of(_unfolded(dump.encode()))


def read_node_dump(text: str) -> list[Node]:
    """Every node of one dump, each after the nodes inside it (the root last); NodeDumpError
    when the text is not exactly one well-formed node."""
    nodes: list[Node] = []
    # The node being read, its field being written, and how deep in lists of that field it
    # is; the nodes around it wait on ``outer`` with theirs.
    node: Node | None = None
    field: list[str] | None = None
    depth = 0
    outer: list[tuple[Node, list[str] | None, int]] = []
    lexemes = iter(_tokens(text))
    for lexeme in lexemes:
        first = lexeme[0]
        if first == ":" and len(lexeme) > 1 and node is not None:
            if depth:
                raise NodeDumpError(f"a field inside a list in a {node.tag}")
            name = lexeme[1:]
            if name in node.fields:
                # A string can start with ':'; one that repeats a field name is not trusted.
                raise NodeDumpError(f"field {name} twice in a {node.tag}")
            field = node.fields[name] = []
        elif lexeme == "{":
            if node is None and nodes:
                raise NodeDumpError("the dump is more than one node")
            tag = next(lexemes, "")
            if not _TAG.fullmatch(tag):
                raise NodeDumpError("a node without a tag")
            if node is not None:
                if field is None:
                    raise NodeDumpError(f"a value before any field in a {node.tag}")
                outer.append((node, field, depth))
            node, field, depth = Node(tag), None, 0
        elif node is None:
            raise NodeDumpError(f"unexpected {lexeme!r} outside a node")
        elif lexeme == "}":
            if depth:
                raise NodeDumpError(f"a list is not closed in a {node.tag}")
            nodes.append(node)
            node, field, depth = outer.pop() if outer else (None, None, 0)
        elif field is None:
            raise NodeDumpError(f"a value before any field in a {node.tag}")
        else:
            if lexeme == "(":
                depth += 1
            elif lexeme == ")":
                if not depth:
                    raise NodeDumpError(f"unexpected ')' in a {node.tag}")
                depth -= 1
            field.append(lexeme)
    if node is not None or not nodes:
        raise NodeDumpError("the dump ends early")
    return nodes
