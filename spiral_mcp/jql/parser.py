"""Recursive-descent parser: tokens to a :class:`~spiral_mcp.jql.nodes.Query`.

Grammar (keywords case-insensitive; NOT binds tighter than AND, AND tighter than OR)::

    query   := [or] [ORDER BY sort ("," sort)*] EOF
    or      := and (("OR" | "||") and)*
    and     := not (("AND" | "&&") not)*
    not     := ("NOT" | "!") not | "(" or ")" | clause
    clause  := field op value
    op      := = | != | ~ | !~ | > | >= | < | <= | IN | NOT IN | IS | IS NOT
    value   := STRING | WORD | EMPTY | NULL | name "(" [arg ("," arg)*] ")"
    sort    := field [ASC | DESC]
"""

from __future__ import annotations

from spiral_mcp.jql import lexer
from spiral_mcp.jql.errors import JqlError
from spiral_mcp.jql.lexer import Token
from spiral_mcp.jql.names import FIELDS, FUNCTIONS, FUNCTIONS_BY_LOWER, resolve_field
from spiral_mcp.jql.nodes import (
    And,
    Clause,
    Empty,
    Func,
    Literal,
    Node,
    Not,
    Or,
    Query,
    SortKey,
    Value,
)

__all__ = ["MAX_DEPTH", "parse_jql"]

MAX_DEPTH = 20
# Bare words that cannot be values (quote them to use them as values).
_RESERVED = frozenset({"AND", "OR", "NOT", "IN", "IS", "ORDER"})
_OPERATORS = "=, !=, ~, !~, >, >=, <, <=, IN, NOT IN, IS or IS NOT"
_FIELD_LIST = ", ".join(FIELDS)
_FUNCTION_LIST = ", ".join(f"{name}()" for name in FUNCTIONS)


class _Parser:
    def __init__(self, jql: str, max_terms: int) -> None:
        self.tokens = lexer.tokenize(jql)
        self.i = 0
        self.depth = 0
        self.terms = 0
        self.max_terms = max_terms

    # -- helpers -------------------------------------------------------------------------------
    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def peek(self, ahead: int = 1) -> Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def take(self) -> Token:
        tok = self.tokens[self.i]
        if tok.kind != lexer.EOF:
            self.i += 1
        return tok

    def fail(self, expected: str, tok: Token | None = None) -> JqlError:
        tok = tok or self.tok
        return JqlError(tok.pos, tok.text if tok.kind != lexer.STRING else f'"{tok.text}"',
                        expected)

    def enter(self) -> None:
        # Bounds recursion, so a hostile query cannot exhaust the stack.
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(f"at most {MAX_DEPTH} levels of nesting")

    # -- grammar -------------------------------------------------------------------------------
    def query(self) -> Query:
        where = None
        if self.tok.kind != lexer.EOF and not self.tok.is_keyword("ORDER"):
            where = self.or_()
        order_by: tuple[SortKey, ...] = ()
        if self.tok.is_keyword("ORDER"):
            order_by = self.order_by()
        if self.tok.kind != lexer.EOF:
            if where is None:
                raise self.fail("end of query")
            more = "AND, OR, ORDER BY or end of query" if not order_by else "',' or end of query"
            raise self.fail(more)
        return Query(where, order_by)

    def or_(self) -> Node:
        children = [self.and_()]
        while self.tok.is_keyword("OR") or self.tok.kind == lexer.PIPES:
            self.take()
            children.append(self.and_())
        return children[0] if len(children) == 1 else Or(tuple(children))

    def and_(self) -> Node:
        children = [self.not_()]
        while self.tok.is_keyword("AND") or self.tok.kind == lexer.AMPS:
            self.take()
            children.append(self.not_())
        return children[0] if len(children) == 1 else And(tuple(children))

    def not_(self) -> Node:
        if self.tok.is_keyword("NOT") or self.tok.kind == lexer.BANG:
            self.enter()
            self.take()
            node: Node = Not(self.not_())
            self.depth -= 1
            return node
        if self.tok.kind == lexer.LPAREN:
            self.enter()
            opening = self.take()
            node = self.or_()
            if self.tok.kind != lexer.RPAREN:
                raise self.fail(f"')' to close the '(' at position {opening.pos}")
            self.take()
            self.depth -= 1
            return node
        return self.clause()

    def field(self) -> tuple[str, Token]:
        tok = self.tok
        if tok.kind not in (lexer.WORD, lexer.STRING) or (
            tok.kind == lexer.WORD and tok.text.upper() in _RESERVED
        ):
            raise self.fail("a field")
        name = resolve_field(tok.text)
        if name is None:
            raise self.fail(f"a field: {_FIELD_LIST}")
        self.take()
        return name, tok

    def clause(self) -> Clause:
        if self.tok.kind == lexer.EOF or self.tok.is_keyword("AND", "OR") or self.tok.kind in (
            lexer.RPAREN, lexer.AMPS, lexer.PIPES,
        ):
            raise self.fail("a field, NOT or '('")
        name, field_tok = self.field()
        self.terms += 1
        if self.terms > self.max_terms:
            raise JqlError(field_tok.pos, field_tok.text, f"at most {self.max_terms} clauses")
        op_tok = self.tok
        value: Value | tuple[Value, ...]
        if op_tok.kind == lexer.OP:
            op = self.take().text
            if self.tok.kind == lexer.LPAREN:
                raise self.fail("a value (a list needs IN or NOT IN)")
            value = self.value()
        elif op_tok.is_keyword("IN") or (
            op_tok.is_keyword("NOT") and self.peek().is_keyword("IN")
        ):
            op = "IN" if op_tok.is_keyword("IN") else "NOT IN"
            self.take()
            if op == "NOT IN":
                self.take()
            value = self.value_list()
        elif op_tok.is_keyword("IS"):
            self.take()
            op = "IS"
            if self.tok.is_keyword("NOT"):
                self.take()
                op = "IS NOT"
            if not self.tok.is_keyword("EMPTY", "NULL"):
                raise self.fail("EMPTY or NULL")
            value = Empty(self.take().pos)
        elif op_tok.is_keyword("NOT"):
            raise self.fail("IN after NOT", self.peek())
        else:
            raise self.fail(f"an operator: {_OPERATORS}")
        return Clause(name, field_tok.pos, op, op_tok.pos, value)

    def value_list(self) -> tuple[Value, ...]:
        if self.tok.kind != lexer.LPAREN:
            raise self.fail("'(' to start a list of values")
        opening = self.take()
        items = [self.value()]
        while self.tok.kind == lexer.COMMA:
            self.take()
            items.append(self.value())
        if self.tok.kind != lexer.RPAREN:
            raise self.fail(f"',' or ')' to close the list opened at position {opening.pos}")
        self.take()
        return tuple(items)

    def value(self) -> Value:
        tok = self.tok
        if tok.kind == lexer.STRING:
            self.take()
            return Literal(tok.text, tok.pos, quoted=True)
        if tok.kind != lexer.WORD or tok.text.upper() in _RESERVED:
            raise self.fail("a value")
        self.take()
        if self.tok.kind == lexer.LPAREN:
            return self.function(tok)
        if tok.text.upper() in ("EMPTY", "NULL"):
            return Empty(tok.pos)
        return Literal(tok.text, tok.pos)

    def function(self, name_tok: Token) -> Func:
        name = FUNCTIONS_BY_LOWER.get(name_tok.text.lower())
        if name is None:
            raise self.fail(f"a function: {_FUNCTION_LIST}", name_tok)
        opening = self.take()
        args: list[Literal] = []
        while self.tok.kind != lexer.RPAREN:
            if args:
                if self.tok.kind != lexer.COMMA:
                    raise self.fail(f"',' or ')' to close the '(' at position {opening.pos}")
                self.take()
            arg = self.tok
            if arg.kind not in (lexer.WORD, lexer.STRING):
                raise self.fail(f"an argument or ')' to close the '(' at position {opening.pos}")
            self.take()
            args.append(Literal(arg.text, arg.pos, quoted=arg.kind == lexer.STRING))
        if len(args) > FUNCTIONS[name]:
            many = "no arguments" if FUNCTIONS[name] == 0 else "at most one argument"
            raise JqlError(args[FUNCTIONS[name]].pos, args[FUNCTIONS[name]].text,
                           f"')': {name}() takes {many}")
        self.take()
        return Func(name, tuple(args), name_tok.pos)

    def order_by(self) -> tuple[SortKey, ...]:
        self.take()
        if not self.tok.is_keyword("BY"):
            raise self.fail("BY after ORDER")
        self.take()
        keys = [self.sort_key()]
        while self.tok.kind == lexer.COMMA:
            self.take()
            keys.append(self.sort_key())
        return tuple(keys)

    def sort_key(self) -> SortKey:
        name, tok = self.field()
        direction = "ASC"
        if self.tok.is_keyword("ASC", "DESC"):
            direction = self.take().text.upper()
        return SortKey(name, tok.pos, direction)


def parse_jql(jql: str, *, max_length: int = 2000, max_terms: int = 100) -> Query:
    """Parse ``jql`` into a syntax tree.

    Raises :class:`JqlError` when the text is longer than ``max_length``, holds more than
    ``max_terms`` clauses, nests deeper than ``MAX_DEPTH``, or is not valid JQL of the subset.
    Field names are resolved here (so an unknown field fails early); values are checked by the
    compiler, which knows each field's type.
    """
    if len(jql) > max_length:
        raise JqlError(max_length, jql[max_length:], f"at most {max_length} characters")
    return _Parser(jql, max_terms).query()
