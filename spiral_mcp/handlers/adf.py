"""Atlassian Document Format (ADF) to Markdown and back, for comments and descriptions.

Jira's REST API v3 speaks ADF (``{"type": "doc", "version": 1, "content": [...]}``); we store
Markdown, the text agents read best. Covered: paragraphs, text with the marks strong, em, code,
strike and link, headings, bullet and ordered lists (nested), code blocks, block quotes, rules,
hard breaks, mentions (``@name``), emoji and inline cards. Any other node keeps its text: an
unknown block renders its children, an unknown inline node its ``text``, so nothing the author
wrote is silently dropped.

:func:`markdown_to_adf` goes the other way for what we write to Jira: the same blocks and marks
(``<https://...>`` becomes an inline card). Anything else stays literal text. A line break inside a
paragraph becomes a hard break: in a work item a newline is meant as one.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["AdfError", "adf_to_markdown", "is_adf", "markdown_to_adf"]

# Deeper than any real document; bounds recursion on hostile input.
_MAX_DEPTH = 64
_HARD_BREAK = "  \n"
# The order marks are applied in, innermost first; link is outermost so its text keeps its style.
_MARK_ORDER = ("code", "em", "strong", "strike", "link")
_BACKTICKS = re.compile(r"`+")


class AdfError(ValueError):
    """The document is not well-formed ADF; the message says where."""


def is_adf(value: Any) -> bool:
    return isinstance(value, Mapping) and value.get("type") == "doc"


def adf_to_markdown(doc: Mapping[str, Any]) -> str:
    """The Markdown text of an ADF document."""
    if not is_adf(doc):
        raise AdfError('an ADF document is an object with "type": "doc"')
    return _blocks(_children(doc, "doc"), "doc", 0, separator="\n\n").strip("\n")


def _children(node: Mapping[str, Any], path: str) -> list[Mapping[str, Any]]:
    content = node.get("content", [])
    if not isinstance(content, list):
        raise AdfError(f"{path}: content must be a list")
    for i, child in enumerate(content):
        if not isinstance(child, Mapping) or not isinstance(child.get("type"), str):
            raise AdfError(f"{path}/content/{i}: a node is an object with a string type")
    return content


def _attrs(node: Mapping[str, Any]) -> Mapping[str, Any]:
    attrs = node.get("attrs")
    return attrs if isinstance(attrs, Mapping) else {}


def _blocks(nodes: list[Mapping[str, Any]], path: str, depth: int, *, separator: str) -> str:
    if depth > _MAX_DEPTH:
        raise AdfError(f"{path}: nested deeper than {_MAX_DEPTH} levels")
    parts = [_block(node, f"{path}/content/{i}", depth + 1) for i, node in enumerate(nodes)]
    return separator.join(p for p in parts if p)


def _block(node: Mapping[str, Any], path: str, depth: int) -> str:
    kind = node["type"]
    match kind:
        case "paragraph":
            return _inline(_children(node, path), path)
        case "heading":
            level = _attrs(node).get("level", 1)
            level = min(max(level, 1), 6) if isinstance(level, int) else 1
            return "#" * level + " " + _inline(_children(node, path), path)
        case "bulletList" | "orderedList":
            return _list(node, path, depth)
        case "codeBlock":
            text = "".join(_text_of(child) for child in _children(node, path))
            language = _attrs(node).get("language")
            fence = "`" * max(3, _longest_backticks(text) + 1)
            info = language if isinstance(language, str) else ""
            return f"{fence}{info}\n{text}\n{fence}"
        case "blockquote" | "panel":
            inner = _blocks(_children(node, path), path, depth, separator="\n\n")
            return "\n".join("> " + line if line else ">" for line in inner.split("\n"))
        case "rule":
            return "---"
        case _:
            children = _children(node, path)
            if children and all(_is_inline(c) for c in children):
                return _inline(children, path)
            # An unknown container (table, expand, mediaGroup ...): keep its text.
            return _blocks(children, path, depth, separator="\n\n")


def _list(node: Mapping[str, Any], path: str, depth: int) -> str:
    ordered = node["type"] == "orderedList"
    start = _attrs(node).get("order", 1) if ordered else 1
    number = start if isinstance(start, int) and start >= 0 else 1
    lines: list[str] = []
    for i, item in enumerate(_children(node, path)):
        item_path = f"{path}/content/{i}"
        marker = f"{number + i}. " if ordered else "- "
        # A list item holds blocks; in a tight list they follow each other line by line.
        body = _blocks(_children(item, item_path), item_path, depth, separator="\n")
        indent = " " * len(marker)
        first, *rest = body.split("\n") if body else [""]
        lines.append(marker + first)
        lines.extend(indent + line if line else "" for line in rest)
    return "\n".join(lines)


def _is_inline(node: Mapping[str, Any]) -> bool:
    return node["type"] in {"text", "hardBreak", "mention", "emoji", "inlineCard", "date",
                            "status"}


def _inline(nodes: list[Mapping[str, Any]], path: str) -> str:
    out: list[str] = []
    for i, node in enumerate(nodes):
        kind = node["type"]
        if kind == "text":
            text = node.get("text")
            if not isinstance(text, str):
                raise AdfError(f"{path}/content/{i}: a text node needs a string text")
            out.append(_marked(text, node.get("marks", []), f"{path}/content/{i}"))
        elif kind == "hardBreak":
            out.append(_HARD_BREAK)
        elif kind == "mention":
            attrs = _attrs(node)
            name = attrs.get("text") or attrs.get("id") or ""
            out.append("@" + str(name).lstrip("@"))
        elif kind == "emoji":
            attrs = _attrs(node)
            out.append(str(attrs.get("text") or attrs.get("shortName") or ""))
        elif kind == "inlineCard":
            url = _attrs(node).get("url")
            out.append(f"<{url}>" if isinstance(url, str) else "")
        else:
            out.append(_text_of(node))
    return "".join(out)


def _marked(text: str, marks: Any, path: str) -> str:
    if not isinstance(marks, list):
        raise AdfError(f"{path}: marks must be a list")
    by_type = {m.get("type"): m for m in marks if isinstance(m, Mapping)}
    if not text.strip():
        return text
    # Markdown delimiters must hug the text: "**bold** " works, "**bold **" does not.
    stripped = text.strip()
    lead = text[: len(text) - len(text.lstrip())]
    trail = text[len(text.rstrip()):]
    for kind in _MARK_ORDER:
        mark = by_type.get(kind)
        if mark is None:
            continue
        if kind == "code":
            ticks = "`" * (_longest_backticks(stripped) + 1)
            pad = " " if stripped.startswith("`") or stripped.endswith("`") else ""
            stripped = f"{ticks}{pad}{stripped}{pad}{ticks}"
        elif kind == "em":
            stripped = f"*{stripped}*"
        elif kind == "strong":
            stripped = f"**{stripped}**"
        elif kind == "strike":
            stripped = f"~~{stripped}~~"
        else:
            href = _attrs(mark).get("href")
            if isinstance(href, str) and href:
                stripped = f"[{stripped}]({href})"
    return lead + stripped + trail


def _text_of(node: Mapping[str, Any]) -> str:
    """The plain text under a node, for code blocks and nodes we do not render. A walk with its
    own stack: a source's document (a synced Jira comment) comes with no depth bound."""
    parts = []
    stack = [node]
    while stack:
        current = stack.pop()
        text = current.get("text")
        if isinstance(text, str):
            parts.append(text)
            continue
        content = current.get("content")
        if isinstance(content, list):
            stack.extend(reversed([c for c in content if isinstance(c, Mapping)]))
    return "".join(parts)


def _longest_backticks(text: str) -> int:
    return max((len(m) for m in _BACKTICKS.findall(text)), default=0)


# --- Markdown to ADF -------------------------------------------------------------------------
_FENCE = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\s`]*)[^`]*$")
_HEADING = re.compile(r"^ {0,3}(?P<hashes>#{1,6})(?:[ \t]+(?P<text>.*?))?(?:[ \t]+#+)?[ \t]*$")
_RULE = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_QUOTE = re.compile(r"^ {0,3}> ?")
_ITEM = re.compile(r"^(?P<indent> *)(?P<marker>[-*+]|(?P<number>\d{1,9})[.)])(?P<space> +|$)")
_AUTOLINK = re.compile(r"<(https?://[^\s<>]+)>")
_LINK_TAIL = re.compile(r"\]\((?P<href>[^\s()]+)(?:[ \t]+\"[^\"]*\")?\)")
_ESCAPABLE = frozenset("\\`*_{}[]()#+-.!~<>|")
# Delimiter runs, longest first, and the mark each gives.
_DELIMITERS = (("**", "strong"), ("__", "strong"), ("~~", "strike"), ("*", "em"), ("_", "em"))
# ADF allows only these blocks inside a list item or a quote; others are adapted by _fit.
_NESTABLE = frozenset({"paragraph", "bulletList", "orderedList", "codeBlock"})


def markdown_to_adf(text: str) -> dict[str, Any]:
    """The ADF document of a Markdown text."""
    lines = text.expandtabs(4).replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return {"type": "doc", "version": 1, "content": _md_blocks(lines, 0)}


def _starts_block(line: str, nested: bool) -> bool:
    if _FENCE.match(line) or _HEADING.match(line) or _RULE.match(line):
        return True
    return nested and bool(_QUOTE.match(line) or _ITEM.match(line))


def _md_blocks(lines: list[str], depth: int) -> list[dict[str, Any]]:
    # Past the depth bound quotes and lists stay text: hostile input cannot recurse for ever.
    nested = depth < _MAX_DEPTH
    blocks: list[dict[str, Any]] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif fence := _FENCE.match(line):
            end = i + 1
            while end < len(lines) and not _closes(lines[end], fence["fence"]):
                end += 1
            blocks.append(_code_block("\n".join(lines[i + 1:end]), fence["info"]))
            i = end + 1
        elif heading := _HEADING.match(line):
            blocks.append({"type": "heading", "attrs": {"level": len(heading["hashes"])},
                           "content": _md_inline(heading["text"] or "")})
            i += 1
        elif _RULE.match(line):
            blocks.append({"type": "rule"})
            i += 1
        elif nested and _QUOTE.match(line):
            end = i
            while end < len(lines) and _QUOTE.match(lines[end]):
                end += 1
            inner = [_QUOTE.sub("", quoted, count=1) for quoted in lines[i:end]]
            blocks.append({"type": "blockquote", "content": _fit(_md_blocks(inner, depth + 1))})
            i = end
        elif nested and _ITEM.match(line):
            node, i = _md_list(lines, i, depth)
            blocks.append(node)
        else:
            end = i + 1
            while end < len(lines) and lines[end].strip() and not _starts_block(lines[end],
                                                                               nested):
                end += 1
            blocks.append({"type": "paragraph", "content": _md_lines(lines[i:end])})
            i = end
    return blocks


def _closes(line: str, fence: str) -> bool:
    stripped = line.strip()
    return len(stripped) >= len(fence) and stripped == fence[0] * len(stripped)


def _code_block(text: str, language: str) -> dict[str, Any]:
    node: dict[str, Any] = {"type": "codeBlock",
                            "content": [{"type": "text", "text": text}] if text else []}
    if language:
        node["attrs"] = {"language": language}
    return node


def _md_list(lines: list[str], i: int, depth: int) -> tuple[dict[str, Any], int]:
    first = _ITEM.match(lines[i])
    assert first is not None
    ordered = first["number"] is not None
    node: dict[str, Any] = {"type": "orderedList" if ordered else "bulletList", "content": []}
    if ordered and int(first["number"]) != 1:
        node["attrs"] = {"order": int(first["number"])}
    while True:
        item = _ITEM.match(lines[i])
        assert item is not None
        # Continuation lines are indented to the item's text; a wide gap means code-like text
        # that starts one column after the marker.
        width = len(item["indent"]) + len(item["marker"])
        column = width + (len(item["space"]) if 0 < len(item["space"]) <= 4 else 1)
        body = [lines[i][column:]]
        i += 1
        while i < len(lines):
            line = lines[i]
            if not line.strip():
                ahead = next((n for n in range(i, len(lines)) if lines[n].strip()), len(lines))
                if ahead < len(lines) and _indent(lines[ahead]) >= column:
                    body.extend([""] * (ahead - i))
                    i = ahead
                    continue
                break
            if _indent(line) >= column:
                body.append(line[column:])
            elif body[-1].strip() and not _starts_block(line, True):
                body.append(line.strip())  # a lazy continuation of the item's paragraph
            else:
                break
            i += 1
        content = _fit(_md_blocks(body, depth + 1))
        if not content or content[0]["type"] not in ("paragraph", "codeBlock"):
            content.insert(0, {"type": "paragraph", "content": []})
        node["content"].append({"type": "listItem", "content": content})
        # Blank lines between items keep the list going; ADF has no loose lists.
        i = next((n for n in range(i, len(lines)) if lines[n].strip()), len(lines))
        following = _ITEM.match(lines[i]) if i < len(lines) else None
        if (following is None or (following["number"] is not None) != ordered
                or _RULE.match(lines[i])):
            return node, i


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _fit(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Blocks fit for a list item or a quote: a heading becomes a paragraph, a quote gives its
    blocks, a rule (no text) goes."""
    fitted: list[dict[str, Any]] = []
    for block in blocks:
        if block["type"] in _NESTABLE:
            fitted.append(block)
        elif block["type"] == "heading":
            fitted.append({"type": "paragraph", "content": block["content"]})
        elif block["type"] == "blockquote":
            fitted.extend(block["content"])
    return fitted


def _md_lines(lines: list[str]) -> list[dict[str, Any]]:
    nodes: list[dict[str, Any]] = []
    for n, line in enumerate(lines):
        if n:
            nodes.append({"type": "hardBreak"})
        stripped = line.strip()
        nodes.extend(_md_inline(stripped[:-1] if stripped.endswith("\\") else stripped))
    return nodes


def _md_inline(text: str) -> list[dict[str, Any]]:
    return _InlineParser(text).parse(0, len(text), [], 0)


class _InlineParser:
    """Code spans, links, autolinks and emphasis of one line, as ADF text nodes with marks."""

    def __init__(self, text: str) -> None:
        self.text = text
        # (opener, end of span) → the openers [from, upto) known to have no closer: a second
        # search would fail the same way, and failing searches must not go quadratic.
        self._failed: dict[tuple[str, int], tuple[int, int]] = {}

    def _known_to_fail(self, opener: str, at: int, end: int) -> bool:
        low, high = self._failed.get((opener, end), (0, 0))
        return low <= at < high

    def parse(self, start: int, end: int, marks: list[dict[str, Any]],
              depth: int) -> list[dict[str, Any]]:
        text = self.text
        nodes: list[dict[str, Any]] = []
        literal: list[str] = []

        def flush() -> None:
            if literal:
                nodes.append(_text_node("".join(literal), marks))
                literal.clear()

        kinds = {m["type"] for m in marks}
        i = start
        while i < end:
            char = text[i]
            if char == "\\" and i + 1 < end and text[i + 1] in _ESCAPABLE:
                literal.append(text[i + 1])
                i += 2
                continue
            if char == "`":
                run = _run(text, i, end)
                close = self._code_close(i + run, end, run)
                if close is None:
                    literal.append(text[i:i + run])
                    i += run
                    continue
                flush()
                code = text[i + run:close]
                if code.startswith(" ") and code.endswith(" ") and code.strip():
                    code = code[1:-1]
                # ADF lets the code mark share a text only with a link.
                nodes.append(_text_node(code, [{"type": "code"}, *(m for m in marks
                                                                  if m["type"] == "link")]))
                i = close + run
                continue
            if char == "<" and (card := _AUTOLINK.match(text, i, end)):
                flush()
                nodes.append({"type": "inlineCard", "attrs": {"url": card[1]}})
                i = card.end()
                continue
            if depth < _MAX_DEPTH and char == "[" and "link" not in kinds:
                link = self._link(i, end)
                if link is not None:
                    close, href, after = link
                    flush()
                    mark = {"type": "link", "attrs": {"href": href}}
                    nodes.extend(self.parse(i + 1, close, [*marks, mark], depth + 1)
                                 if close > i + 1 else [_text_node(href, [*marks, mark])])
                    i = after
                    continue
            if depth < _MAX_DEPTH and char in "*_~":
                span = self._emphasis(i, end)
                if span is not None:
                    size, close, kind = span
                    flush()
                    inner = marks if kind in kinds else [*marks, {"type": kind}]
                    nodes.extend(self.parse(i + size, close, inner, depth + 1))
                    i = close + size
                    continue
            literal.append(char)
            i += 1
        flush()
        return nodes

    def _code_close(self, start: int, end: int, run: int) -> int | None:
        key = "`" * run
        if self._known_to_fail(key, start, end):
            return None
        k = start
        while (k := self.text.find("`", k, end)) != -1:
            length = _run(self.text, k, end)
            if length == run:
                return k
            k += length
        self._failed[(key, end)] = (start, end)
        return None

    def _link(self, at: int, end: int) -> tuple[int, str, int] | None:
        """(the label's end, href, the position after the link) of ``[label](href)``."""
        if self._known_to_fail("[", at, end):
            return None
        close = self.text.find("]", at + 1, end)
        tail = _LINK_TAIL.match(self.text, close, end) if close != -1 else None
        if tail is None:
            # Every "[" before this label's end would meet the same "]".
            self._failed[("[", end)] = (at, end if close == -1 else close)
            return None
        return close, tail["href"], tail.end()

    def _emphasis(self, at: int, end: int) -> tuple[int, int, str] | None:
        """(delimiter size, closer position, mark) of the emphasis opening at ``at``."""
        text = self.text
        for delimiter, kind in _DELIMITERS:
            size = len(delimiter)
            if not text.startswith(delimiter, at) or at + size >= end:
                continue
            # An opener hugs its text; "_" inside a word (snake_case) opens nothing.
            if text[at + size].isspace() or (delimiter[0] == "_" and at > 0
                                              and text[at - 1].isalnum()):
                continue
            if self._known_to_fail(delimiter, at, end):
                continue
            close = self._closer(delimiter, at + size, end)
            if close is not None:
                return size, close, kind
            self._failed[(delimiter, end)] = (at, end)
        return None

    def _closer(self, delimiter: str, start: int, end: int) -> int | None:
        text, char, size = self.text, delimiter[0], len(delimiter)
        k = start
        while (k := text.find(char, k, end)) != -1:
            run = _run(text, k, end)
            # A run of two closes strong, not em; a longer run closes with its last characters
            # ("***both***" is em inside strong).
            fits = run >= size if size == 2 else run != 2
            if (fits and k > start and not text[k - 1].isspace()
                    and not (char == "_" and k + run < len(text) and text[k + run].isalnum())):
                return k + run - size
            k += run
        return None


def _run(text: str, at: int, end: int) -> int:
    """How many times the character at ``at`` repeats from there."""
    n = at
    while n < end and text[n] == text[at]:
        n += 1
    return n - at


def _text_node(text: str, marks: list[dict[str, Any]]) -> dict[str, Any]:
    node: dict[str, Any] = {"type": "text", "text": text}
    if marks:
        node["marks"] = list(marks)
    return node
