"""Atlassian Document Format to Markdown: the nodes and marks agents send, and malformed input."""

from __future__ import annotations

from typing import Any

import pytest

from spiral_mcp.handlers.adf import AdfError, adf_to_markdown


def doc(*content: dict[str, Any]) -> dict[str, Any]:
    return {"type": "doc", "version": 1, "content": list(content)}


def para(*content: dict[str, Any]) -> dict[str, Any]:
    return {"type": "paragraph", "content": list(content)}


def text(value: str, *marks: str | dict[str, Any]) -> dict[str, Any]:
    node: dict[str, Any] = {"type": "text", "text": value}
    if marks:
        node["marks"] = [m if isinstance(m, dict) else {"type": m} for m in marks]
    return node


def item(*content: dict[str, Any]) -> dict[str, Any]:
    return {"type": "listItem", "content": list(content)}


def test_paragraphs_are_separated_by_a_blank_line() -> None:
    assert adf_to_markdown(doc(para(text("One.")), para(text("Two.")))) == "One.\n\nTwo."


def test_marks() -> None:
    link = {"type": "link", "attrs": {"href": "https://example.com/x"}}
    result = adf_to_markdown(doc(para(
        text("bold", "strong"), text(" and "), text("italic", "em"), text(", "),
        text("x = 1", "code"), text(", "), text("gone", "strike"), text(", "),
        text("site", link), text(", "), text("both", "strong", "em"),
    )))
    assert result == ("**bold** and *italic*, `x = 1`, ~~gone~~, [site](https://example.com/x), "
                      "***both***")


def test_mark_delimiters_hug_the_text() -> None:
    # "**word **" is not bold in Markdown; the space goes outside.
    assert adf_to_markdown(doc(para(text("word ", "strong"), text("next")))) == "**word** next"


def test_code_mark_with_backticks_uses_a_longer_fence() -> None:
    assert adf_to_markdown(doc(para(text("a`b", "code")))) == "``a`b``"


def test_headings() -> None:
    result = adf_to_markdown(doc(
        {"type": "heading", "attrs": {"level": 2}, "content": [text("Steps")]},
        {"type": "heading", "attrs": {"level": 9}, "content": [text("Deep")]},
    ))
    assert result == "## Steps\n\n###### Deep"


def test_bullet_and_ordered_lists_nest() -> None:
    result = adf_to_markdown(doc(
        {"type": "bulletList", "content": [
            item(para(text("first"))),
            item(para(text("second")), {"type": "orderedList", "attrs": {"order": 3},
                                        "content": [item(para(text("three"))),
                                                    item(para(text("four")))]}),
        ]},
        para(text("after")),
    ))
    assert result == "- first\n- second\n  3. three\n  4. four\n\nafter"


def test_code_block_keeps_its_text_and_language() -> None:
    block = {"type": "codeBlock", "attrs": {"language": "python"},
             "content": [text("print('hi')\nx = '```'")]}
    assert adf_to_markdown(doc(block)) == "````python\nprint('hi')\nx = '```'\n````"


def test_hard_break_mention_emoji_and_card() -> None:
    result = adf_to_markdown(doc(para(
        text("line one"), {"type": "hardBreak"}, text("cc "),
        {"type": "mention", "attrs": {"id": "5b10", "text": "@Alice Smith"}}, text(" "),
        {"type": "mention", "attrs": {"id": "bob"}}, text(" "),
        {"type": "emoji", "attrs": {"shortName": ":smile:", "text": "😄"}}, text(" see "),
        {"type": "inlineCard", "attrs": {"url": "https://example.com/PROJ-1"}},
    )))
    assert result == ("line one  \ncc @Alice Smith @bob 😄 see <https://example.com/PROJ-1>")


def test_blockquote_and_rule() -> None:
    result = adf_to_markdown(doc(
        {"type": "blockquote", "content": [para(text("quoted")), para(text("more"))]},
        {"type": "rule"},
    ))
    assert result == "> quoted\n>\n> more\n\n---"


def test_unknown_nodes_keep_their_text() -> None:
    table = {"type": "table", "content": [{"type": "tableRow", "content": [
        {"type": "tableCell", "content": [para(text("cell"))]}]}]}
    assert adf_to_markdown(doc(table, para({"type": "status", "attrs": {}, "text": "DONE"}))) \
        == "cell\n\nDONE"


def test_empty_document() -> None:
    assert adf_to_markdown(doc()) == ""


@pytest.mark.parametrize("bad", [
    {"type": "paragraph"},
    {"type": "doc", "content": "text"},
    {"type": "doc", "content": [{"text": "no type"}]},
    {"type": "doc", "content": [{"type": "paragraph", "content": [{"type": "text"}]}]},
    {"type": "doc", "content": [{"type": "paragraph",
                                 "content": [{"type": "text", "text": "x", "marks": "strong"}]}]},
])
def test_malformed_documents_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(AdfError):
        adf_to_markdown(bad)


def test_hostile_nesting_is_refused() -> None:
    node: dict[str, Any] = para(text("deep"))
    for _ in range(100):
        node = {"type": "blockquote", "content": [node]}
    with pytest.raises(AdfError, match="nested deeper"):
        adf_to_markdown(doc(node))
