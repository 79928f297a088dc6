"""Atlassian Document Format to Markdown and back: the nodes and marks agents send and write, and
malformed input."""

from __future__ import annotations

from typing import Any

import pytest

from spiral_mcp.handlers.adf import AdfError, adf_to_markdown, markdown_to_adf


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


# --- Markdown to ADF -------------------------------------------------------------------------
def md(text: str) -> list[dict[str, Any]]:
    document = markdown_to_adf(text)
    assert (document["type"], document["version"]) == ("doc", 1)
    return document["content"]


def test_markdown_paragraphs_and_line_breaks() -> None:
    assert md("One\ntwo  \nthree\\\nfour\n\n\nNext.") == [
        para(text("One"), {"type": "hardBreak"}, text("two"), {"type": "hardBreak"},
             text("three"), {"type": "hardBreak"}, text("four")),
        para(text("Next.")),
    ]


def test_markdown_marks() -> None:
    link = {"type": "link", "attrs": {"href": "https://example.com/x"}}
    assert md("**b** *i* __B__ _I_ ~~s~~ `c` [site](https://example.com/x) ***both***") == [para(
        text("b", "strong"), text(" "), text("i", "em"), text(" "), text("B", "strong"),
        text(" "), text("I", "em"), text(" "), text("s", "strike"), text(" "), text("c", "code"),
        text(" "), text("site", link), text(" "), text("both", "strong", "em"))]


def test_markdown_nested_marks_and_code_inside_them() -> None:
    link = {"type": "link", "attrs": {"href": "https://e.io"}}
    # ADF lets code share a text only with a link: the emphasis around it is dropped there.
    assert md("*a **b** c* **x `y` z** [`run` it](https://e.io)") == [para(
        text("a ", "em"), text("b", "em", "strong"), text(" c", "em"), text(" "),
        text("x ", "strong"), text("y", "code"), text(" z", "strong"), text(" "),
        text("run", "code", link), text(" it", link))]


@pytest.mark.parametrize("literal", [
    "snake_case_name", "2 * 3 * 4", "a ** b", "*open", "`unclosed", "[label] (x)", "[]",
    "a ** ** b", "file_name_v2.txt",
])
def test_markdown_that_is_not_markup_stays_literal(literal: str) -> None:
    assert md(literal) == [para(text(literal))]


def test_markdown_escapes_and_autolinks() -> None:
    assert md(r"\*not em\* see <https://e.io/A-1>") == [para(
        text("*not em* see "), {"type": "inlineCard", "attrs": {"url": "https://e.io/A-1"}})]


def test_markdown_headings_rules_and_code_blocks() -> None:
    source = "# Title\n###### Six ##\n#hashtag\n\n---\n\n```python\nx = 1\n\n  *y*\n```\n~~~\n~~~"
    assert md(source) == [
        {"type": "heading", "attrs": {"level": 1}, "content": [text("Title")]},
        {"type": "heading", "attrs": {"level": 6}, "content": [text("Six")]},
        para(text("#hashtag")),
        {"type": "rule"},
        {"type": "codeBlock", "attrs": {"language": "python"},
         "content": [text("x = 1\n\n  *y*")]},
        {"type": "codeBlock", "content": []},
    ]


def test_markdown_unclosed_fence_runs_to_the_end() -> None:
    assert md("```\ncode\nmore") == [{"type": "codeBlock", "content": [text("code\nmore")]}]


def test_markdown_lists_nest_and_keep_their_start() -> None:
    source = "Steps:\n3. first\n   lazy line\n4. second\n   - a\n   - b\n\n     more b\n\nafter"
    assert md(source) == [
        para(text("Steps:")),
        {"type": "orderedList", "attrs": {"order": 3}, "content": [
            item(para(text("first"), {"type": "hardBreak"}, text("lazy line"))),
            item(para(text("second")), {"type": "bulletList", "content": [
                item(para(text("a"))), item(para(text("b")), para(text("more b")))]}),
        ]},
        para(text("after")),
    ]


def test_markdown_list_items_hold_only_what_adf_allows() -> None:
    assert md("- # head\n-\n- ```\n  code\n  ```\n* * *") == [
        {"type": "bulletList", "content": [
            item(para(text("head"))),
            item(para()),
            item({"type": "codeBlock", "content": [text("code")]}),
        ]},
        {"type": "rule"},
    ]


def test_markdown_block_quotes() -> None:
    assert md("> quoted\n> - point\n>\n> > deeper") == [{"type": "blockquote", "content": [
        para(text("quoted")), {"type": "bulletList", "content": [item(para(text("point")))]},
        para(text("deeper"))]}]


def test_markdown_round_trips_through_adf() -> None:
    source = ("## Plan\n\nRun **all** the `tests`, then *ship* ~~it~~.  \nSee [docs](https://d.io)."
              "\n\n- one\n- two\n  1. nested\n\n```sh\nmake test\n```\n\n> note\n\n---")
    assert adf_to_markdown(markdown_to_adf(source)) == source


def test_markdown_hostile_nesting_is_bounded() -> None:
    deep = markdown_to_adf(">" * 500 + " text")
    depth = 0
    node = deep["content"][0]
    while node["type"] == "blockquote":
        depth += 1
        node = node["content"][0]
    assert depth == 1  # ADF quotes hold no quote: the levels fold into one
    assert md("*" * 2000 + "a") == [para(text("*" * 2000 + "a"))]
