"""The syntax tree of a parsed JQL query. Every node keeps its source position for errors."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "And", "Clause", "Empty", "Func", "Literal", "Node", "Not", "Or", "Query", "SortKey", "Value",
]


@dataclass(frozen=True)
class Literal:
    """A quoted or bare value, as text (quotes removed, escapes resolved)."""

    text: str
    pos: int
    quoted: bool = False


@dataclass(frozen=True)
class Empty:
    """EMPTY or NULL used as a value."""

    pos: int


@dataclass(frozen=True)
class Func:
    """A function call such as ``startOfDay(-1d)``; ``name`` is the canonical spelling."""

    name: str
    args: tuple[Literal, ...]
    pos: int


Value = Literal | Empty | Func


@dataclass(frozen=True)
class Clause:
    """``field op value``; ``field`` is the canonical field name, ``op`` the upper-cased operator
    (=, !=, ~, !~, >, >=, <, <=, IN, NOT IN, IS, IS NOT); ``value`` a tuple for IN / NOT IN."""

    field: str
    field_pos: int
    op: str
    op_pos: int
    value: Value | tuple[Value, ...]


@dataclass(frozen=True)
class And:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    children: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    child: Node


Node = Clause | And | Or | Not


@dataclass(frozen=True)
class SortKey:
    field: str
    pos: int
    direction: str  # 'ASC' | 'DESC'


@dataclass(frozen=True)
class Query:
    where: Node | None
    order_by: tuple[SortKey, ...]
