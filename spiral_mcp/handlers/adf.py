"""Atlassian Document Format (ADF) to Markdown, for comments and descriptions agents send as ADF.

Jira's REST API v3 speaks ADF (``{"type": "doc", "version": 1, "content": [...]}``); we store
Markdown, the text agents read best. Covered: paragraphs, text with the marks strong, em, code,
strike and link, headings, bullet and ordered lists (nested), code blocks, block quotes, rules,
hard breaks, mentions (``@name``), emoji and inline cards. Any other node keeps its text: an
unknown block renders its children, an unknown inline node its ``text``, so nothing the author
wrote is silently dropped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["AdfError", "adf_to_markdown", "is_adf"]

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
    """The plain text under a node, for code blocks and nodes we do not render."""
    text = node.get("text")
    if isinstance(text, str):
        return text
    content = node.get("content")
    if isinstance(content, list):
        return "".join(_text_of(c) for c in content if isinstance(c, Mapping))
    return ""


def _longest_backticks(text: str) -> int:
    return max((len(m) for m in _BACKTICKS.findall(text)), default=0)
