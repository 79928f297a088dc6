"""The reader of PostgreSQL's node dumps: structure from the server, never from a string in it."""

from __future__ import annotations

import pytest

from spiral_mcp.explorer.nodedump import NodeDumpError, read_node_dump
from tests.test_explorer import envelope

DUMP = ("{QUERY :commandType 1 :rtable <> :targetList ({TARGETENTRY :expr {FUNCEXPR :funcid 870 "
        ":args ({CONST :consttype 25 :constvalue 5 [ 20 0 0 0 120 ]})} :resname a\\{b}) "
        ":opnos (o 96 97)}")


def test_nodes_come_innermost_first_with_their_own_fields() -> None:
    nodes = read_node_dump(DUMP)
    assert [n.tag for n in nodes] == ["CONST", "FUNCEXPR", "TARGETENTRY", "QUERY"]
    const, function, target, query = nodes
    assert const.fields["constvalue"] == ["5", "[", "20", "0", "0", "0", "120", "]"]
    assert function.scalar("funcid") == "870"
    assert target.scalar("resname") == "a\\{b"  # an escaped brace opens no node
    assert query.fields["opnos"] == ["(", "o", "96", "97", ")"]
    assert query.fields["targetList"] == ["(", ")"]


def test_the_server_s_folds_are_undone() -> None:
    folded = DUMP.replace(" :funcid ", "\n:funcid ").replace(" :resname a", "\n:resname a")
    assert [n.tag for n in read_node_dump(folded)] == ["CONST", "FUNCEXPR", "TARGETENTRY",
                                                      "QUERY"]


@pytest.mark.parametrize(("dump", "why"), [
    ("{QUERY :resname\n" + "x" * 78 + "\ny}", "folded"),  # a fold that cut a token
    ("{QUERY :a 1 :a 2}", "twice"),
    ("{QUERY :a 1", "ends early"),
    ("{QUERY :a (1}", "not closed"),
    ("{QUERY :a 1} {QUERY :a 2}", "more than one"),
    ("{query :a 1}", "without a tag"),
    ("{QUERY 1 :a 1}", "before any field"),
    ("{QUERY :a 1)}", "unexpected"),
    ("{QUERY :a ( :b 1 )}", "inside a list"),
    ("{QUERY :a x\\", "stray backslash"),
])
def test_what_it_cannot_be_sure_of_is_refused(dump: str, why: str) -> None:
    with pytest.raises(NodeDumpError, match=why):
        read_node_dump(dump)


@pytest.mark.parametrize("name", [
    ":funcid 2077 {FUNCEXPR :funcid 1}",
    "} ) ( { :funcid",
    "\\" * 62,
    ":" + "x" * 62,
    "a b" * 21,
    "é" * 31,
])
async def test_names_made_to_confuse_the_reader_are_read_or_refused_cleanly(client, make_tenant,
                                                                           name: str) -> None:
    tenant = await make_tenant()
    quoted = name.replace('"', '""')
    sql = f'SELECT 1 AS "{quoted}", t."{quoted}" FROM (SELECT 2 AS "{quoted}") t'
    env = await envelope(client, tenant, "explorer_query", sql=sql)
    if env["success"]:
        assert env["data"]["rows"] == [[1, 2]]
    else:
        assert env["error"]["code"] == "PERMISSION_DENIED", env
