"""Reading PostgreSQL's text form of a node tree, as ``debug_print_parse`` sends it.

``nodeToString`` writes ``{TAG :field value ...}`` for a node, ``(...)`` for a list, and bare
tokens for scalars, escaping with a backslash every whitespace or brace in a string. The server
then folds the text into lines of at most 78 bytes (``format_node_dump``): a fold replaces one
space, except where a line holds no space to fold at, and the fold cuts a token. Such a cut
cannot be told from an escaped character, so a dump with one is refused rather than guessed at.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator

__all__ = ["Node", "NodeDumpError", "parse_node_dump"]

# format_node_dump's LINELEN.
_LINE_BYTES = 78
# A token: structure, or a run of anything else in which a backslash escapes the next character;
# white space between tokens; and anything else, which no dump holds (a lone final backslash).
_TOKEN = re.compile(r"(\s+)|([{}()]|(?:\\.|[^\s{}()\\])+)|(.)", re.DOTALL)

Value = "Node | list[Value] | str"


class NodeDumpError(ValueError):
    """The text is not a node tree this reader can be sure of."""


@dataclasses.dataclass(slots=True)
class Node:
    """One node: its tag (``FUNCEXPR``) and its fields, each a list of values (a node, a list,
    or scalar tokens; ``:constvalue 4 [ 1 0 0 0 ]`` is several)."""

    tag: str
    fields: dict[str, list] = dataclasses.field(default_factory=dict)

    def scalar(self, name: str) -> str | None:
        """The field's single token, or None when absent or not a single token."""
        values = self.fields.get(name)
        return values[0] if values and len(values) == 1 and isinstance(values[0], str) else None

    def walk(self) -> Iterator[Node]:
        """This node and every node below it."""
        stack: list = [self]
        while stack:
            item = stack.pop()
            if isinstance(item, Node):
                yield item
                for values in item.fields.values():
                    stack.extend(values)
            elif isinstance(item, list):
                stack.extend(item)


def _unfold(text: str) -> str:
    lines = text.split("\n")
    for line in lines[:-1]:
        if len(line.encode()) >= _LINE_BYTES and " " not in line[1:]:
            raise NodeDumpError("a token was folded across lines")
    return " ".join(lines)


def parse_node_dump(text: str) -> Node:
    """The node tree of one dump; NodeDumpError when it is not exactly one well-formed node."""
    tokens = []
    for space, token, stray in _TOKEN.findall(_unfold(text)):
        if stray:
            raise NodeDumpError(f"a stray {stray!r}")
        if not space:
            tokens.append(token)
    node, end = _value(tokens, 0)
    if not isinstance(node, Node) or end != len(tokens):
        raise NodeDumpError("the dump is not one node")
    return node


def _value(lexemes: list[str], i: int) -> tuple:
    if i >= len(lexemes):
        raise NodeDumpError("the dump ends early")
    lexeme = lexemes[i]
    if lexeme == "{":
        return _node(lexemes, i + 1)
    if lexeme == "(":
        items: list = []
        i += 1
        while i < len(lexemes) and lexemes[i] != ")":
            if lexemes[i] == "}" or lexemes[i].startswith(":"):
                raise NodeDumpError(f"unexpected {lexemes[i]!r} in a list")
            item, i = _value(lexemes, i)
            items.append(item)
        if i >= len(lexemes):
            raise NodeDumpError("a list is not closed")
        return items, i + 1
    if lexeme in (")", "}"):
        raise NodeDumpError(f"unexpected {lexeme!r}")
    return lexeme, i + 1


def _node(tokens: list[str], i: int) -> tuple[Node, int]:
    if i >= len(tokens) or not re.fullmatch(r"[A-Z_]+", tokens[i]):
        raise NodeDumpError("a node without a tag")
    node = Node(tokens[i])
    i += 1
    field: list | None = None
    while i < len(tokens) and tokens[i] != "}":
        lexeme = tokens[i]
        if lexeme.startswith(":") and len(lexeme) > 1:
            name = lexeme[1:]
            if name in node.fields:
                # A string can start with ':'; one that repeats a field name is not trusted.
                raise NodeDumpError(f"field {name} twice in a {node.tag}")
            field = node.fields[name] = []
            i += 1
            continue
        if field is None:
            raise NodeDumpError(f"a value before any field in a {node.tag}")
        value, i = _value(tokens, i)
        field.append(value)
    if i >= len(tokens):
        raise NodeDumpError(f"a {node.tag} is not closed")
    return node, i + 1
