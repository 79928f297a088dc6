"""Reading PostgreSQL's text form of a node tree, as ``debug_print_parse`` sends it.

``nodeToString`` writes ``{TAG :field value ...}`` for a node, ``(...)`` for a list, and bare
tokens for scalars, escaping with a backslash every whitespace or brace in a string. The server
then folds the text into lines of at most 78 bytes (``format_node_dump``): a fold replaces one
space, except where a line holds no space to fold at, and the fold cuts a token. Such a cut
cannot be told from an escaped character, so a dump with one is refused rather than guessed at.

The reader is one pass over the tokens (a query's tree runs to thousands of them): it gives each
node with the scalar tokens of its own fields, a list written in a field (``(o 23 25)``) kept as
its tokens, a node written in a field given as a node of its own.
"""

from __future__ import annotations

import dataclasses
import re

__all__ = ["Node", "NodeDumpError", "read_node_dump"]

# format_node_dump's LINELEN.
_LINE_BYTES = 78
# A token: structure, or a run of anything else in which a backslash escapes the next character.
_TOKEN = re.compile(r"[{}()]|(?:[^\s{}()\\]|\\.)[^\s{}()\\]*(?:\\.[^\s{}()\\]*)*", re.DOTALL)
_TAG = re.compile(r"[A-Z_]+")


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


def _tokens(text: str) -> list[str]:
    lines = text.split("\n")
    for line in lines[:-1]:
        if len(line.encode()) >= _LINE_BYTES and " " not in line[1:]:
            raise NodeDumpError("a token was folded across lines")
    text = " ".join(lines)
    trailing = len(text.rstrip()) - len(text.rstrip().rstrip("\\"))
    if trailing % 2:
        raise NodeDumpError("a stray backslash at the end")
    return _TOKEN.findall(text)


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
