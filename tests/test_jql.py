"""The JQL subset compiler: parsing, compiling, errors, and the compiled SQL run against real
PostgreSQL as the runtime role inside a tenant transaction."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest

from spiral_mcp.jql import (
    MAX_DEPTH,
    CompiledQuery,
    JqlError,
    KnownValues,
    check_known,
    compile_jql,
    named_values,
    parse_jql,
)
from spiral_mcp.jql.nodes import And, Clause, Empty, Func, Literal, Not, Or, SortKey

# A Wednesday afternoon: startOfDay is 03-18, startOfWeek Monday 03-16, startOfMonth 03-01.
NOW = datetime(2026, 3, 18, 15, 30, tzinfo=UTC)


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def last(*parts: int) -> datetime:
    """The last microsecond of the day (3 parts) or minute (5 parts) given."""
    moment = utc(*parts)
    if len(parts) == 3:
        return moment.replace(hour=23, minute=59, second=59, microsecond=999999)
    return moment.replace(second=59, microsecond=999999)


def compile_(jql: str, user: str | None = "alice@example.com", **kw: Any) -> CompiledQuery:
    return compile_jql(jql, user=user, now=NOW, **kw)


def where(jql: str, **kw: Any) -> tuple[str, list[Any]]:
    compiled = compile_(jql, **kw)
    return compiled.where, compiled.params


# -- parsing -------------------------------------------------------------------------------------

def test_parse_builds_a_tree_with_positions() -> None:
    query = parse_jql('project = WEB AND labels IN (a, "b c") ORDER BY created DESC, key')
    assert query.where == And((
        Clause("project", 0, "=", 8, Literal("WEB", 10)),
        Clause("labels", 18, "IN", 25, (Literal("a", 29), Literal("b c", 32, quoted=True))),
    ))
    assert query.order_by == (SortKey("created", 48, "DESC"), SortKey("key", 62, "ASC"))


def test_and_binds_tighter_than_or_and_not_tighter_than_and() -> None:
    query = parse_jql("a1 = 1 OR NOT b = 2 AND c = 3".replace("a1", "status").replace(
        "b =", "type =").replace("c =", "priority ="))
    assert isinstance(query.where, Or)
    left, right = query.where.children
    assert isinstance(left, Clause) and left.field == "status"
    assert isinstance(right, And)
    assert isinstance(right.children[0], Not) and isinstance(right.children[1], Clause)


def test_parentheses_override_precedence() -> None:
    query = parse_jql("(status = a OR status = b) AND type = bug")
    assert isinstance(query.where, And)
    assert isinstance(query.where.children[0], Or)


def test_jira_symbol_spellings_of_and_or_not() -> None:
    assert where("status = a && !type = bug || priority = low") == where(
        "status = a AND NOT type = bug OR priority = low")


def test_values_functions_and_empty_in_the_tree() -> None:
    query = parse_jql("assignee IN (currentUser(), EMPTY, NULL) AND created > startOfDay(-1d)")
    assert isinstance(query.where, And)
    first, second = query.where.children
    assert isinstance(first, Clause) and first.value == (
        Func("currentUser", (), 13), Empty(28), Empty(35))
    assert isinstance(second, Clause) and second.value == Func(
        "startOfDay", (Literal("-1d", 66),), 55)


@pytest.mark.parametrize(("jql", "text"), [
    ('summary ~ "say \\"hi\\""', 'say "hi"'),
    ("summary ~ 'it\\'s'", "it's"),
    ("summary ~ 'double \" inside single'", 'double " inside single'),
    ('summary ~ "back\\\\slash"', "back\\slash"),
    ('summary ~ "line\\nbreak\\ttab"', "line\nbreak\ttab"),
    ('summary ~ "caf\\u00e9"', "café"),
    # Two escapes making a surrogate pair, as JSON writes one, are one character.
    ('summary ~ "\\ud83d\\ude00!"', "\U0001f600!"),
    ("summary ~ bare_word-1.2@x", "bare_word-1.2@x"),
    ("summary ~ 42", "42"),
    ('summary ~ "AND"', "AND"),
])
def test_value_forms(jql: str, text: str) -> None:
    query = parse_jql(jql)
    assert isinstance(query.where, Clause) and isinstance(query.where.value, Literal)
    assert query.where.value.text == text


def test_keywords_and_fields_are_case_insensitive() -> None:
    lower = compile_("project = web and status not in (a) or not type = bug order by key desc")
    mixed = compile_("PROJECT = web AnD StAtUs NoT In (a) oR NOT TYPE = bug ORDER by KEY Desc")
    assert lower == mixed
    assert compile_("issuetype = bug").where == compile_("IssueType = bug").where == (
        compile_("type = bug").where)
    assert compile_("statuscategory = done") == compile_("statusCategory = done")
    assert compile_("assignee is null") == compile_("assignee IS EMPTY")


# -- compiling, field by field -------------------------------------------------------------------

@pytest.mark.parametrize(("jql", "sql", "params"), [
    ("project = web", "w.project_key = $1::text", ["WEB"]),
    ("project != web", "NOT (w.project_key = $1::text)", ["WEB"]),
    ("project in (web, 'api')", "w.project_key = ANY($1::text[])", [["WEB", "API"]]),
    ("project not in (web)", "NOT (w.project_key = $1::text)", ["WEB"]),
    ("key = web-12", "w.key = $1::text", ["WEB-12"]),
    ("key in (WEB-1, api-2)", "w.key = ANY($1::text[])", [["WEB-1", "API-2"]]),
    ("key > WEB-10", "(w.project_key = $1::text AND w.number > $2::integer)", ["WEB", 10]),
    ("key <= web-3", "(w.project_key = $1::text AND w.number <= $2::integer)", ["WEB", 3]),
    ("parent = web-1", "w.parent_key = $1::text", ["WEB-1"]),
    ("parent is empty", "w.parent_key IS NULL", []),
    ("parent is not empty", "NOT (w.parent_key IS NULL)", []),
    ("status = 'In Progress'", "lower(w.status) = lower($1::text)", ["In Progress"]),
    ("status in (Done, 'To Do')", "lower(w.status) IN (lower($1::text), lower($2::text))",
     ["Done", "To Do"]),
    ("status != done", "NOT (lower(w.status) = lower($1::text))", ["done"]),
    ("statusCategory = 'To Do'", "w.status_category = $1::text", ["todo"]),
    ("statusCategory in ('In Progress', in_review, Done, CANCELLED, blocked)",
     "w.status_category = ANY($1::text[])",
     [["in_progress", "in_review", "done", "cancelled", "blocked"]]),
    ("type = Sub-task", "w.type = $1::text", ["subtask"]),
    ("issuetype in (Epic, STORY, task, bug, feature)", "w.type = ANY($1::text[])",
     [["epic", "story", "task", "bug", "feature"]]),
    ("priority = Highest", "w.priority = $1::text", ["critical"]),
    # Jira's names as the writers and the Jira adapter store them.
    ("priority in (Blocker, Lowest, Trivial, Normal, Minor)", "w.priority = ANY($1::text[])",
     [["critical", "none", "none", "medium", "low"]]),
    ("priority > medium", "w.priority = ANY($1::text[])", [["high", "critical"]]),
    ("priority >= High", "w.priority = ANY($1::text[])", [["high", "critical"]]),
    ("priority < medium", "w.priority = ANY($1::text[])", [["none", "low"]]),
    ("priority <= low", "w.priority = ANY($1::text[])", [["none", "low"]]),
    ("priority > critical", "w.priority = ANY($1::text[])", [[]]),
    ("source = GitHub", "w.source = $1::text", ["github"]),
    ("assignee = bob", "w.assignee = $1::text", ["bob"]),
    ("assignee = currentUser()", "w.assignee = $1::text", ["alice@example.com"]),
    ("reporter in (currentUser(), bob)", "w.reporter = ANY($1::text[])",
     [["alice@example.com", "bob"]]),
    ("assignee is empty", "w.assignee IS NULL", []),
    ("assignee = EMPTY", "w.assignee IS NULL", []),
    ("assignee != NULL", "NOT (w.assignee IS NULL)", []),
    ("assignee in (bob, EMPTY)", "(w.assignee = $1::text OR w.assignee IS NULL)", ["bob"]),
    ("assignee not in (bob, EMPTY)", "NOT ((w.assignee = $1::text OR w.assignee IS NULL))",
     ["bob"]),
    ("labels = x", "NULLIF(w.labels, '{}') @> ARRAY[$1::text]", ["x"]),
    ("labels != x", "NOT (NULLIF(w.labels, '{}') @> ARRAY[$1::text])", ["x"]),
    ("labels in (x, y)", "NULLIF(w.labels, '{}') && $1::text[]", [["x", "y"]]),
    ("labels not in (x, y)", "NOT (NULLIF(w.labels, '{}') && $1::text[])", [["x", "y"]]),
    ("labels is empty", "cardinality(w.labels) = 0", []),
    ("labels is not empty", "NOT (cardinality(w.labels) = 0)", []),
    ("summary ~ login", "w.title ILIKE $1::text", ["%login%"]),
    ("summary !~ login", "NOT (w.title ILIKE $1::text)", ["%login%"]),
    ("description ~ '50%_off\\\\'", "w.description ILIKE $1::text", ["%50\\%\\_off\\\\%"]),
    ("description is empty", "(w.description IS NULL OR w.description = '')", []),
    ("description = EMPTY", "(w.description IS NULL OR w.description = '')", []),
    ("text ~ x", "(w.title ILIKE $1::text OR COALESCE(w.description, '') ILIKE $1::text OR "
     "EXISTS (SELECT 1 FROM comments w_comment WHERE w_comment.tenant_id = w.tenant_id "
     "AND w_comment.work_item_id = w.id AND w_comment.body ILIKE $1::text) OR "
     "(w.custom_fields <> '{}' AND EXISTS (SELECT 1 FROM jsonb_each(w.custom_fields) "
     "w_custom(name, value) WHERE jsonb_typeof(w_custom.value) = 'string' "
     "AND w_custom.value #>> '{}' ILIKE $1::text)))",
     ["%x%"]),
    ("created > 2026-01-31", "w.created_at > $1::timestamptz", [utc(2026, 1, 31)]),
    ("updated >= '2026/01/31'", "w.updated_at >= $1::timestamptz", [utc(2026, 1, 31)]),
    ("created = 2026-01-31",
     "(w.created_at >= $1::timestamptz AND w.created_at <= $2::timestamptz)",
     [utc(2026, 1, 31), last(2026, 1, 31)]),
    ("due != 2026-01-31",
     "NOT ((w.due_at >= $1::timestamptz AND w.due_at <= $2::timestamptz))",
     [utc(2026, 1, 31), last(2026, 1, 31)]),
    ("resolved = '2026-01-31 14:00'",
     "(w.resolved_at >= $1::timestamptz AND w.resolved_at <= $2::timestamptz)",
     [utc(2026, 1, 31, 14), last(2026, 1, 31, 14, 0)]),
    ("resolved is empty", "w.resolved_at IS NULL", []),
    ("due is not null", "NOT (w.due_at IS NULL)", []),
    ("created in (2026-01-31, -1d)",
     "((w.created_at >= $1::timestamptz AND w.created_at <= $2::timestamptz) OR "
     "w.created_at = $3::timestamptz)",
     [utc(2026, 1, 31), last(2026, 1, 31), NOW - timedelta(days=1)]),
])
def test_compiles_each_field_and_operator(jql: str, sql: str, params: list[Any]) -> None:
    assert where(jql) == (sql, params)


@pytest.mark.parametrize(("value", "expected"), [
    ("-7d", NOW - timedelta(days=7)),
    ("-2w", NOW - timedelta(weeks=2)),
    ("-4h", NOW - timedelta(hours=4)),
    ("-30m", NOW - timedelta(minutes=30)),
    ("+1d", NOW + timedelta(days=1)),
    ("'-1w 2d'", NOW - timedelta(days=9)),
    ("3D", NOW + timedelta(days=3)),
    ('"2026-01-31 14:05:09"', utc(2026, 1, 31, 14, 5, 9)),
    ("now()", NOW),
    ("startOfDay()", utc(2026, 3, 18)),
    ("startOfDay(-1d)", utc(2026, 3, 17)),
    ("startOfDay(-1)", utc(2026, 3, 17)),
    ("startOfDay('+9h')", utc(2026, 3, 18, 9)),
    ("startOfWeek()", utc(2026, 3, 16)),
    ("startOfWeek(-1)", utc(2026, 3, 9)),
    ("startOfMonth()", utc(2026, 3, 1)),
    ("startOfMonth(-1)", utc(2026, 2, 1)),
    ("startOfMonth(+14d)", utc(2026, 3, 15)),
    ("startOfYear()", utc(2026, 1, 1)),
    ("endOfDay()", utc(2026, 3, 19) - timedelta(microseconds=1)),
    ("endOfDay(+1)", utc(2026, 3, 20) - timedelta(microseconds=1)),
    ("endOfWeek()", utc(2026, 3, 23) - timedelta(microseconds=1)),
    ("endOfMonth()", utc(2026, 4, 1) - timedelta(microseconds=1)),
    ("endOfMonth(-1M)", utc(2026, 3, 1) - timedelta(microseconds=1)),
    ("endOfYear()", utc(2027, 1, 1) - timedelta(microseconds=1)),
    ("STARTOFDAY()", utc(2026, 3, 18)),
])
def test_date_values_and_functions_resolve_against_now(value: str, expected: datetime) -> None:
    assert where(f"created <= {value}") == ("w.created_at <= $1::timestamptz", [expected])


def test_now_without_a_zone_is_utc_and_other_zones_convert() -> None:
    naive = compile_jql("created > now()", user=None, now=NOW.replace(tzinfo=None))
    assert naive.params == [NOW]
    # 01:30 on the 19th at UTC+10 is still the 18th in UTC: days are UTC days.
    eastern = NOW.astimezone(timezone(timedelta(hours=10)))
    assert eastern.day == 19
    shifted = compile_jql("created > startOfDay()", user=None, now=eastern)
    assert shifted.params == [utc(2026, 3, 18)]


@pytest.mark.parametrize(("jql", "sql", "params"), [
    # A due date is a date, as in Jira: every value stands for its UTC day, for every operator.
    ("due < 2026-01-31", "w.due_at < $1::timestamptz", [utc(2026, 1, 31)]),
    ("due <= 2026-01-31", "w.due_at <= $1::timestamptz", [last(2026, 1, 31)]),
    ("due > 2026-01-31", "w.due_at > $1::timestamptz", [last(2026, 1, 31)]),
    ("due >= 2026-01-31", "w.due_at >= $1::timestamptz", [utc(2026, 1, 31)]),
    ("due = 2026-01-31", "(w.due_at >= $1::timestamptz AND w.due_at <= $2::timestamptz)",
     [utc(2026, 1, 31), last(2026, 1, 31)]),
    ("due <= '2026-01-31 14:00'", "w.due_at <= $1::timestamptz", [last(2026, 1, 31)]),
    ("due > '2026-01-31 14:00'", "w.due_at > $1::timestamptz", [last(2026, 1, 31)]),
    ("due < now()", "w.due_at < $1::timestamptz", [utc(2026, 3, 18)]),
    ("due <= -1d", "w.due_at <= $1::timestamptz", [last(2026, 3, 17)]),
    ("due >= endOfWeek()", "w.due_at >= $1::timestamptz", [utc(2026, 3, 22)]),
    ("due = now()", "(w.due_at >= $1::timestamptz AND w.due_at <= $2::timestamptz)",
     [utc(2026, 3, 18), last(2026, 3, 18)]),
    # A date-and-time field keeps comparing the moment, as Jira's created does.
    ("created <= 2026-01-31", "w.created_at <= $1::timestamptz", [utc(2026, 1, 31)]),
    ("created > now()", "w.created_at > $1::timestamptz", [NOW]),
])
def test_due_compares_days(jql: str, sql: str, params: list[Any]) -> None:
    assert where(jql) == (sql, params)


@pytest.mark.parametrize(("jql", "sql", "params"), [
    # The day's end used to be computed as the next day, past what a datetime holds.
    ("created < 9999-12-31", "w.created_at < $1::timestamptz", [utc(9999, 12, 31)]),
    ("created = 9999-12-31",
     "(w.created_at >= $1::timestamptz AND w.created_at <= $2::timestamptz)",
     [utc(9999, 12, 31), last(9999, 12, 31)]),
    ("updated in ('9999-12-31 23:59')",
     "(w.updated_at >= $1::timestamptz AND w.updated_at <= $2::timestamptz)",
     [utc(9999, 12, 31, 23, 59), last(9999, 12, 31)]),
    ("updated = '9999-12-31 23:59:59'",
     "(w.updated_at >= $1::timestamptz AND w.updated_at <= $2::timestamptz)",
     [utc(9999, 12, 31, 23, 59, 59), last(9999, 12, 31)]),
    ("due > 9999-12-31", "w.due_at > $1::timestamptz", [last(9999, 12, 31)]),
    ("due <= endOfYear(+7973)", "w.due_at <= $1::timestamptz", [last(9999, 12, 31)]),
])
def test_the_last_day_a_date_can_name(jql: str, sql: str, params: list[Any]) -> None:
    assert where(jql) == (sql, params)


def test_boolean_structure_and_numbering() -> None:
    compiled = compile_("project = web AND (status = a OR NOT type = bug) OR labels = x",
                        first_param=3)
    assert compiled.where == (
        "((w.project_key = $3::text AND (lower(w.status) = lower($4::text) OR "
        "NOT (w.type = $5::text))) OR NULLIF(w.labels, '{}') @> ARRAY[$6::text])")
    assert compiled.params == ["WEB", "a", "bug", "x"]


def test_alias_choice() -> None:
    assert where("summary ~ x", alias="")[0] == "title ILIKE $1::text"
    assert where("key > A-1", alias="t")[0] == (
        "(t.project_key = $1::text AND t.number > $2::integer)")
    with pytest.raises(ValueError, match="alias"):
        compile_("summary ~ x", alias="w; DROP")


def test_empty_query_and_order_by_only_are_true() -> None:
    assert compile_("") == CompiledQuery("TRUE", [], [], [])
    assert compile_("   ") == CompiledQuery("TRUE", [], [], [])
    assert compile_("ORDER BY updated DESC") == CompiledQuery(
        "TRUE", [], [("w.updated_at", "DESC")], ["timestamp"])


def test_order_by_uses_the_allowlist() -> None:
    compiled = compile_("ORDER BY key DESC, priority DESC, statusCategory, summary asc, due, "
                        "assignee, reporter, project, parent, status, type, source, created, "
                        "resolved")
    assert compiled.order_by[:3] == [
        ("w.project_key", "DESC"), ("w.number", "DESC"),
        ("CASE w.priority WHEN 'none' THEN 0 WHEN 'low' THEN 1 WHEN 'medium' THEN 2 "
         "WHEN 'high' THEN 3 WHEN 'critical' THEN 4 END", "DESC"),
    ]
    assert compiled.order_by[3][0].startswith("CASE w.status_category WHEN 'todo' THEN 0")
    assert compiled.order_by[4:] == [
        ("w.title", "ASC"), ("date_trunc('day', w.due_at, 'UTC')", "ASC"),
        ("w.assignee", "ASC"), ("w.reporter", "ASC"),
        ("w.project_key", "ASC"), ("w.parent_key", "ASC"), ("w.status", "ASC"),
        ("w.type", "ASC"), ("w.source", "ASC"), ("w.created_at", "ASC"),
        ("w.resolved_at", "ASC"),
    ]


SENTINEL = "zq'sentinel\"x"


@pytest.mark.parametrize("template", [
    "project = {v}", "status = {v}", "status in ({v}, {v})", "assignee = {v}", "reporter != {v}",
    "labels in ({v})", "labels = {v}", "summary ~ {v}", "description !~ {v}", "text ~ {v}",
])
def test_no_value_ever_reaches_the_sql_text(template: str) -> None:
    value = "ZQSENTINEL" if template.startswith("project") else SENTINEL
    quoted = '"' + value.replace('"', '\\"') + '"'
    compiled = compile_(template.format(v=quoted))
    assert "sentinel" not in compiled.where.lower()
    assert any(value in str(p) for p in compiled.params)


def test_current_user_without_a_user_is_an_error() -> None:
    with pytest.raises(JqlError) as err:
        compile_("project = A AND assignee = currentUser()", user=None)
    assert str(err.value) == (
        "at position 27: currentUser() needs an API key that acts for a user")
    assert err.value.position == 27 and err.value.found == "currentUser()"


# -- errors --------------------------------------------------------------------------------------

FIELD_LIST = ("a field: project, key, status, statusCategory, type, priority, assignee, "
              "reporter, labels, parent, created, updated, resolved, due, summary, description, "
              "text, source")


@pytest.mark.parametrize(("jql", "position", "found", "expected"), [
    # missing or misplaced values
    ("status = ", 9, "", "a value"),
    ("project = A AND status = AND", 25, "AND", "a value"),
    ("status = (a, b)", 9, "(", "a value (a list needs IN or NOT IN)"),
    ("status in a", 10, "a", "'(' to start a list of values"),
    ("status in ()", 11, ")", "a value"),
    ("status in (a b)", 13, "b", "',' or ')' to close the list opened at position 10"),
    ("status in (a,", 13, "", "a value"),
    ("assignee is bob", 12, "bob", "EMPTY or NULL"),
    # fields and operators
    ("foo = 1", 0, "foo", FIELD_LIST),
    ("", None, None, None),
    ("status", 6, "", "an operator: =, !=, ~, !~, >, >=, <, <=, IN, NOT IN, IS or IS NOT"),
    ("status ~ x", 7, "~", "an operator for status: =, !=, IN, NOT IN"),
    ("summary = x", 8, "=", "an operator for summary: ~, !~"),
    ("created ~ x", 8, "~", "an operator for created: =, !=, >, >=, <, <=, IN, NOT IN"),
    ("assignee > x", 9, ">", "an operator for assignee: =, !=, IN, NOT IN, IS, IS NOT"),
    ("labels < x", 7, "<", "an operator for labels: =, !=, IN, NOT IN, IS, IS NOT"),
    ("status is empty", 7, "IS", "an operator for status: =, !=, IN, NOT IN"),
    ("status not a", 11, "a", "IN after NOT"),
    ("AND status = a", 0, "AND", "a field, NOT or '('"),
    ("status = a AND", 14, "", "a field, NOT or '('"),
    ("status = a OR OR", 14, "OR", "a field, NOT or '('"),
    # values of typed fields
    ("created > 2026-02-30", 10, "2026-02-30", "a date"),
    ("created > yesterday", 10, "yesterday", "a date"),
    ("due = '2026-01-31 25:00'", 6, "2026-01-31 25:00", "a date"),
    ("created > -99999999d", 10, "-99999999d", "a date"),
    ("created > startOfDay(x)", 21, "x", "an offset like -1, -1d, +2w, -3M or +4h"),
    ("created > startOfDay(1, 2)", 24, "2", "')': startOfDay() takes at most one argument"),
    ("created > now(1)", 14, "1", "')': now() takes no arguments"),
    ("created > currentUser()", 10, "currentUser()", "a date for created"),
    ("assignee = now()", 11, "now()", "a user or currentUser() for assignee"),
    ("status = startOfDay()", 9, "startOfDay()", "a status value, not a function"),
    ("status = foo()", 9, "foo", "a function: currentUser(), now(), startOfDay()"),
    ("created > startOfDay(", 21, "", "an argument or ')' to close the '(' at position 20"),
    ("priority = urgent", 11, "urgent", "a priority value: critical, high, medium, low, none"),
    ("type = story-ish", 7, "story-ish", "a type value: epic, story, task, bug, subtask"),
    ("statusCategory = open", 17, "open", "a statusCategory value: todo, in_progress"),
    ("source = gitlab", 9, "gitlab", "a source value: local, jira, github, asana"),
    ("key = 12", 6, "12", "an issue key like PROJ-12"),
    ("key > WEB", 6, "WEB", "an issue key like PROJ-12"),
    ("parent = web-0", 9, "web-0", "an issue key like PROJ-12"),
    ("project = 'My Project'", 10, "My Project", "a project key like PROJ"),
    ("status = EMPTY", 9, "EMPTY", "a status value (status is never empty)"),
    ("priority in (high, EMPTY)", 19, "EMPTY", "a priority value (priority is never empty)"),
    ("created > EMPTY", 10, "EMPTY", "a created value (EMPTY takes IS or IS NOT)"),
    ("summary ~ ''", 10, "", "some text to search for"),
    # structure
    ("(status = a", 11, "", "')' to close the '(' at position 0"),
    ("status = a)", 10, ")", "AND, OR, ORDER BY or end of query"),
    ("status = a b", 11, "b", "AND, OR, ORDER BY or end of query"),
    ("status = a ORDER BY key junk", 24, "junk", "',' or end of query"),
    ("status = a ORDER key", 17, "key", "BY after ORDER"),
    ("ORDER BY", 8, "", "a field"),
    ("ORDER BY nope", 9, "nope", FIELD_LIST),
    ("ORDER BY labels", 9, "labels", "a field to sort by: project, key"),
    ("ORDER BY key, created, KEY", 23, "key", "each field at most once in ORDER BY"),
    # lexing
    ('summary ~ "open', 15, "", '" to close the string opened at position 10'),
    ("summary ~ 'open", 15, "", "' to close the string opened at position 10"),
    ('summary ~ "a\\qb"', 12, "\\q", "an escape"),
    ("status = a ^ b", 11, "^", "a field, operator or value"),
    # PostgreSQL text holds neither NUL nor half a surrogate pair: refused here, positioned.
    ('summary ~ "a\x00b"', 12, "\\u0000", "a character other than NUL"),
    ('summary ~ "a\\u0000b"', 12, "\\u0000", "a character other than NUL"),
    ('assignee = "\\udfff"', 12, "\\udfff", "a character other than NUL"),
    ('labels in ("\\ud83d", x)', 12, "\\ud83d", "a character other than NUL"),
    ('status = "\\ud83d\\u0041"', 10, "\\ud83d", "a character other than NUL"),
    ('summary ~ "\ud800"', 11, "\\ud800", "a character other than NUL"),
    ("status = a; DROP", 10, ";", "a field, operator or value"),
])
def test_errors_name_position_found_and_expected(
    jql: str, position: int | None, found: str | None, expected: str | None,
) -> None:
    if position is None:
        compile_(jql)
        return
    with pytest.raises(JqlError) as err:
        compile_(jql)
    assert (err.value.position, err.value.found) == (position, found), str(err.value)
    assert err.value.expected.startswith(expected), err.value.expected
    shown = "end of query" if not found else f"'{found}'"
    assert str(err.value) == f"at position {position}: found {shown}, expected " + (
        err.value.expected)
    assert isinstance(err.value, ValueError)


def test_project_and_status_values_are_checked_against_the_known_ones() -> None:
    jql = "project = web AND NOT (status in (Done, 'in progress') OR project != API)"
    query = parse_jql(jql)
    assert [(field, value.text, value.pos) for field, value in named_values(query)] == [
        ("project", "web", 10), ("status", "Done", jql.index("Done")),
        ("status", "in progress", jql.index("'in")), ("project", "API", jql.index("API"))]
    check_known(query, KnownValues(("API", "WEB"), ("Done", "In Progress")))
    with pytest.raises(JqlError) as err:
        check_known(query, KnownValues(("API", "WEB"), ("Done",)))
    position = jql.index("'in")
    assert (err.value.position, err.value.found) == (position, "in progress")
    assert str(err.value) == (f"at position {position}: the value 'in progress' does not exist "
                              "for the field 'status'; known values: Done")
    many = KnownValues(tuple(f"P{n}" for n in range(60)), ())
    with pytest.raises(JqlError) as err:
        check_known(parse_jql("status = x OR project = X"), many)
    assert str(err.value).startswith("at position 9: the value 'x' does not exist for the "
                                     "field 'status'; known values: none")
    with pytest.raises(JqlError) as err:
        check_known(parse_jql("project = X"), many)
    assert str(err.value).endswith("known values: P0, P1, P2, " + ", ".join(
        f"P{n}" for n in range(3, 50)) + ", ... (10 more)")


def test_error_message_example() -> None:
    with pytest.raises(JqlError, match=r"^at position 17: found 'AND', expected a value$"):
        compile_("key = A OR key = AND")


def test_limits_on_length_terms_and_depth() -> None:
    with pytest.raises(JqlError) as err:
        compile_("summary ~ " + "a" * 2000)
    assert err.value.position == 2000 and err.value.expected == "at most 2000 characters"
    compile_("summary ~ " + "a" * 90, max_length=100)
    with pytest.raises(JqlError, match="at most 100 characters"):
        compile_("summary ~ " + "a" * 91, max_length=100)

    many = " OR ".join(f"key = A-{i}" for i in range(1, 101))
    assert len(compile_(many, max_length=5000).params) == 100
    with pytest.raises(JqlError) as err:
        compile_(many + " OR key = A-101", max_length=5000)
    assert err.value.expected == "at most 100 clauses" and err.value.found == "key"
    assert err.value.position == len(many) + 4
    with pytest.raises(JqlError, match="at most 3 clauses"):
        compile_("key = A-1 AND key = A-2 AND key = A-3 AND key = A-4", max_terms=3)

    deep = "(" * MAX_DEPTH + "status = a" + ")" * MAX_DEPTH
    assert compile_(deep).where == "lower(w.status) = lower($1::text)"
    with pytest.raises(JqlError) as err:
        compile_("(" + deep + ")")
    assert err.value.position == MAX_DEPTH and err.value.expected == "at most 20 levels of nesting"
    with pytest.raises(JqlError, match="levels of nesting"):
        compile_("NOT " * (MAX_DEPTH + 1) + "status = a")


# -- against PostgreSQL --------------------------------------------------------------------------

INJECTION = "x'); DROP TABLE work_items; --"

# key, title, description, type, status, category, priority, assignee, reporter, labels,
# parent, created, updated, resolved, due, source
ITEMS: list[tuple[Any, ...]] = [
    ("JQ-1", "Login page crashes", "Stack trace on submit", "bug", "In Progress", "in_progress",
     "critical", "alice", "bob", ["frontend", "urgent"], None, NOW - timedelta(days=10),
     NOW - timedelta(hours=1), None, utc(2026, 3, 19, 12), "jira"),
    ("JQ-2", "Auth revamp", None, "epic", "To Do", "todo", "high", None, "alice", [], None,
     NOW - timedelta(days=40), NOW - timedelta(days=20), None, None, "local"),
    ("JQ-3", "Add OAuth login", "Use 50% fewer clicks", "story", "In Review", "in_review",
     "medium", "bob", "alice", ["backend"], "JQ-2", utc(2026, 1, 31, 10),
     NOW - timedelta(days=2), None, utc(2026, 3, 31), "local"),
    ("JQ-4", "Write docs", "", "task", "Done", "done", "low", "alice", None, ["docs"], "JQ-2",
     utc(2026, 1, 31, 23, 59, 59), NOW - timedelta(days=3), NOW - timedelta(days=3), None,
     "local"),
    ("JQ-5", "Fix typo in footer", "snake_case_name is wrong", "bug", "Done", "done", "none",
     "carol", "bob", ["frontend"], None, utc(2026, 2, 1), utc(2026, 3, 17, 9),
     utc(2026, 3, 17, 9), None, "local"),
    ("JQ-6", "Blocked on vendor", "waiting for API keys", "task", "Blocked", "blocked", "high",
     "bob", "bob", ["backend", "urgent"], None, NOW - timedelta(hours=5),
     NOW - timedelta(minutes=30), None, None, "github"),
    ("JQ-7", "Dark mode idea", None, "feature", "Cancelled", "cancelled", "low", None, "carol",
     [], None, utc(2026, 3, 1), utc(2026, 3, 2, 12), utc(2026, 3, 2, 12), None, "asana"),
    ("JQ-8", "Login subtask", "child of JQ-1", "subtask", "To Do", "todo", "medium", "alice",
     "alice", ["frontend"], "JQ-1", NOW - timedelta(days=1), NOW - timedelta(days=1), None,
     utc(2026, 3, 16), "local"),
    ("JQ-9", "Performance tuning", "Make queries faster", "task", "In Progress", "in_progress",
     "high", "carol", "alice", ["backend", "perf"], None, utc(2025, 12, 15),
     NOW - timedelta(days=8), None, utc(2026, 4, 15), "local"),
    ("JQ-10", "Discount 100% off", None, "bug", "To Do", "todo", "critical", "bob", "carol", [],
     None, NOW - timedelta(days=15), NOW - timedelta(days=7, hours=-1), None, None, "local"),
    ("JQ-11", "Rename user_name column", "x", "task", "Ready for QA", "in_review", "medium",
     None, None, [], None, NOW - timedelta(days=6), NOW - timedelta(days=6), None, None,
     "local"),
    ("JQ-12", INJECTION + " stays text", None, "task", "To Do", "todo", "low", None, None, [],
     None, NOW - timedelta(days=20), NOW - timedelta(days=20), None, None, "local"),
    ("OPS-1", "Rotate keys", "quarterly", "task", "To Do", "todo", "high", "alice", "carol",
     ["infra"], None, NOW - timedelta(days=2), NOW - timedelta(days=2), None, None, "local"),
]
ALL = [item[0] for item in ITEMS]


def all_but(*keys: str) -> list[str]:
    return [k for k in ALL if k not in keys]


async def insert_items(conn: asyncpg.Connection, tenant_id: uuid.UUID,
                       items: list[tuple[Any, ...]]) -> None:
    """Insert projects and items as the owner, inside the tenant's context (RLS is forced)."""
    async with conn.transaction():
        await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
        for project in sorted({item[0].split("-")[0] for item in items}):
            await conn.execute(
                "INSERT INTO projects (tenant_id, project_key, name) VALUES ($1, $2, $3)",
                tenant_id, project, f"Project {project}")
        await conn.executemany(
            """INSERT INTO work_items (tenant_id, key, project_key, number, title, description,
                   type, status, status_category, priority, assignee, reporter, labels,
                   parent_key, created_at, updated_at, resolved_at, due_at, source)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                       $17, $18, $19)""",
            [(tenant_id, item[0], item[0].split("-")[0], int(item[0].split("-")[1]), *item[1:])
             for item in items])


@pytest.fixture
async def tenant_items(admin_conn: asyncpg.Connection, make_tenant) -> uuid.UUID:
    tenant = await make_tenant(name="jql")
    await insert_items(admin_conn, tenant.id, ITEMS)
    return tenant.id


async def run(conn: asyncpg.Connection, tenant_id: uuid.UUID | None, jql: str,
              user: str | None = "alice") -> list[str]:
    """Run the compiled query as the runtime role in a tenant transaction; keys in order."""
    compiled = compile_jql(jql, user=user, now=NOW)
    order = ", ".join(f"{expr} {direction}" for expr, direction in compiled.order_by)
    order = order or "w.project_key, w.number"
    async with conn.transaction():
        if tenant_id is not None:
            await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
        rows = await conn.fetch(
            f"SELECT w.key FROM work_items w WHERE {compiled.where} ORDER BY {order}, w.id",
            *compiled.params)
    return [row["key"] for row in rows]


CASES: list[tuple[str, list[str]]] = [
    ("", ALL),
    ("project = jq", all_but("OPS-1")),
    ("project != JQ", ["OPS-1"]),
    ("project in (jq, ops)", ALL),
    ("key = jq-3", ["JQ-3"]),
    ("key in (JQ-1, jq-12, OPS-1)", ["JQ-1", "JQ-12", "OPS-1"]),
    ("key != JQ-1", all_but("JQ-1")),
    ("key > JQ-9", ["JQ-10", "JQ-11", "JQ-12"]),
    ("key <= JQ-2", ["JQ-1", "JQ-2"]),
    ("status = 'in progress'", ["JQ-1", "JQ-9"]),
    ("status in (DONE, 'ready for qa')", ["JQ-4", "JQ-5", "JQ-11"]),
    ("status != done", all_but("JQ-4", "JQ-5")),
    ("statusCategory = 'To Do'", ["JQ-2", "JQ-8", "JQ-10", "JQ-12", "OPS-1"]),
    ("statusCategory in (in_review, Blocked)", ["JQ-3", "JQ-6", "JQ-11"]),
    ("statusCategory = Done", ["JQ-4", "JQ-5"]),
    ("type = Sub-task", ["JQ-8"]),
    ("issuetype in (BUG, epic)", ["JQ-1", "JQ-2", "JQ-5", "JQ-10"]),
    ("priority = Highest", ["JQ-1", "JQ-10"]),
    ("priority >= high", ["JQ-1", "JQ-2", "JQ-6", "JQ-9", "JQ-10", "OPS-1"]),
    ("priority < medium", ["JQ-4", "JQ-5", "JQ-7", "JQ-12"]),
    ("priority <= Lowest", ["JQ-5"]),
    ("priority <= minor", ["JQ-4", "JQ-5", "JQ-7", "JQ-12"]),
    ("priority > critical", []),
    ("assignee = currentUser()", ["JQ-1", "JQ-4", "JQ-8", "OPS-1"]),
    ("assignee is empty", ["JQ-2", "JQ-7", "JQ-11", "JQ-12"]),
    ("assignee = EMPTY", ["JQ-2", "JQ-7", "JQ-11", "JQ-12"]),
    # As in Jira, != does not match an empty field.
    ("assignee != alice", ["JQ-3", "JQ-5", "JQ-6", "JQ-9", "JQ-10"]),
    ("assignee in (bob, EMPTY)", ["JQ-2", "JQ-3", "JQ-6", "JQ-7", "JQ-10", "JQ-11", "JQ-12"]),
    ("assignee not in (alice, bob)", ["JQ-5", "JQ-9"]),
    ("reporter is not empty and reporter = bob", ["JQ-1", "JQ-5", "JQ-6"]),
    ("labels = frontend", ["JQ-1", "JQ-5", "JQ-8"]),
    ("labels in (urgent, perf)", ["JQ-1", "JQ-6", "JQ-9"]),
    ("labels is empty", ["JQ-2", "JQ-7", "JQ-10", "JQ-11", "JQ-12"]),
    # As in Jira, != and NOT IN leave out items with no labels, as they leave out empty fields.
    ("labels != frontend", all_but("JQ-1", "JQ-5", "JQ-8", "JQ-2", "JQ-7", "JQ-10", "JQ-11",
                                   "JQ-12")),
    ("labels not in (frontend, backend)", ["JQ-4", "OPS-1"]),
    ("labels not in (frontend, EMPTY)", ["JQ-3", "JQ-4", "JQ-6", "JQ-9", "OPS-1"]),
    ("labels in (frontend, EMPTY)", ["JQ-1", "JQ-2", "JQ-5", "JQ-7", "JQ-8", "JQ-10", "JQ-11",
                                     "JQ-12"]),
    ("parent = jq-2", ["JQ-3", "JQ-4"]),
    ("parent is not empty", ["JQ-3", "JQ-4", "JQ-8"]),
    ("parent in (JQ-1, JQ-2)", ["JQ-3", "JQ-4", "JQ-8"]),
    ("created >= -7d", ["JQ-6", "JQ-8", "JQ-11", "OPS-1"]),
    ("created >= -1w", ["JQ-6", "JQ-8", "JQ-11", "OPS-1"]),
    ("created = 2026-01-31", ["JQ-3", "JQ-4"]),
    ("created = '2026-01-31 10:00'", ["JQ-3"]),
    ("created < 2026-02-01", ["JQ-3", "JQ-4", "JQ-9"]),
    ("created <= '2026/02/01'", ["JQ-3", "JQ-4", "JQ-5", "JQ-9"]),
    ("created != 2026-01-31", all_but("JQ-3", "JQ-4")),
    ("created in (2026-01-31, 2026-02-01)", ["JQ-3", "JQ-4", "JQ-5"]),
    ("created < 9999-12-31", ALL),
    ("created >= 9999-12-31 OR updated = '9999-12-31 23:59'", []),
    ("updated >= startOfDay()", ["JQ-1", "JQ-6"]),
    ("updated >= -1h", ["JQ-1", "JQ-6"]),
    ("updated > -1h", ["JQ-6"]),
    ("updated > -30m", []),
    ("resolved >= startOfDay(-1d)", ["JQ-5"]),
    ("resolved >= startOfWeek()", ["JQ-5"]),
    ("resolved >= startOfMonth()", ["JQ-4", "JQ-5", "JQ-7"]),
    ("resolved >= startOfMonth() AND resolved < startOfWeek()", ["JQ-4", "JQ-7"]),
    ("resolved is empty", all_but("JQ-4", "JQ-5", "JQ-7")),
    ("due < now()", ["JQ-8"]),
    ("due <= endOfDay()", ["JQ-8"]),
    ("due <= endOfDay(+1)", ["JQ-1", "JQ-8"]),
    ("due > endOfMonth()", ["JQ-9"]),
    ("due = 2026-03-31", ["JQ-3"]),
    ("due is not empty and due >= startOfYear()", ["JQ-1", "JQ-3", "JQ-8", "JQ-9"]),
    ("summary ~ LOGIN", ["JQ-1", "JQ-3", "JQ-8"]),
    ("summary ~ '%'", ["JQ-10"]),
    ("summary ~ '_'", ["JQ-11", "JQ-12"]),
    ("summary !~ login", all_but("JQ-1", "JQ-3", "JQ-8")),
    ("description ~ '50%'", ["JQ-3"]),
    ("description ~ snake_case", ["JQ-5"]),
    ("description is empty", ["JQ-2", "JQ-4", "JQ-7", "JQ-10", "JQ-12"]),
    ("description is not empty", ["JQ-1", "JQ-3", "JQ-5", "JQ-6", "JQ-8", "JQ-9", "JQ-11",
                                  "OPS-1"]),
    # Null descriptions never match !~ (as with != on an empty field).
    ("description !~ x", ["JQ-1", "JQ-3", "JQ-4", "JQ-5", "JQ-6", "JQ-8", "JQ-9", "OPS-1"]),
    ("text ~ 'api keys'", ["JQ-6"]),
    ("text ~ faster", ["JQ-9"]),
    ("text ~ login", ["JQ-1", "JQ-3", "JQ-8"]),
    # ...but text !~ keeps items without a description whose title does not match.
    ("text !~ login", all_but("JQ-1", "JQ-3", "JQ-8")),
    ("source = GitHub", ["JQ-6"]),
    ("source in (jira, asana)", ["JQ-1", "JQ-7"]),
    ("source != local", ["JQ-1", "JQ-6", "JQ-7"]),
    # precedence
    ("project = OPS OR statusCategory = done AND priority = low", ["JQ-4", "OPS-1"]),
    ("(project = OPS OR statusCategory = done) AND priority = low", ["JQ-4"]),
    ("NOT statusCategory = done AND type = bug", ["JQ-1", "JQ-10"]),
    ("NOT (statusCategory = done AND type = bug)", all_but("JQ-5")),
    ("not not type = epic", ["JQ-2"]),
    ("PROJECT = ops AnD StAtUs = 'TO DO'", ["OPS-1"]),
    # ordering
    ("project = JQ AND type = bug ORDER BY priority DESC, key ASC", ["JQ-1", "JQ-10", "JQ-5"]),
    ("key >= JQ-8 ORDER BY key DESC", ["JQ-12", "JQ-11", "JQ-10", "JQ-9", "JQ-8"]),
    ("labels = backend ORDER BY statusCategory", ["JQ-9", "JQ-6", "JQ-3"]),
    ("assignee = currentUser() ORDER BY created DESC", ["JQ-8", "OPS-1", "JQ-1", "JQ-4"]),
    ("type = bug order by summary", ["JQ-10", "JQ-5", "JQ-1"]),
]


async def test_compiled_queries_return_the_expected_keys(
    app_conn: asyncpg.Connection, tenant_items: uuid.UUID,
) -> None:
    failures = []
    for jql, expected in CASES:
        got = await run(app_conn, tenant_items, jql)
        if got != expected:
            failures.append(f"{jql!r}: got {got}, expected {expected}")
    assert not failures, "\n".join(failures)


# Due dates on one day at several times of day (synced ones can carry a time), and at the
# edges of the days around it.
DUE_ITEMS: list[tuple[Any, ...]] = [
    (f"DUE-{n}", f"Due {n}", None, "task", "To Do", "todo", "medium", None, None, [], None,
     NOW - timedelta(days=1), NOW - timedelta(days=1), None, due, "local")
    for n, due in enumerate([
        utc(2026, 3, 20, 6), utc(2026, 3, 20, 18), utc(2026, 3, 20),
        utc(2026, 3, 21), last(2026, 3, 19), None], start=1)
]


@pytest.mark.parametrize(("jql", "keys"), [
    ("due = 2026-03-20", ["DUE-1", "DUE-2", "DUE-3"]),
    ("due != 2026-03-20", ["DUE-4", "DUE-5"]),
    ("due in (2026-03-19, 2026-03-21)", ["DUE-4", "DUE-5"]),
    # The day itself is in <= and >=, not in < and >: what moment of it each item is due at
    # does not matter (the midnight instant used to decide).
    ("due <= 2026-03-20", ["DUE-1", "DUE-2", "DUE-3", "DUE-5"]),
    ("due < 2026-03-20", ["DUE-5"]),
    ("due > 2026-03-20", ["DUE-4"]),
    ("due >= 2026-03-20", ["DUE-1", "DUE-2", "DUE-3", "DUE-4"]),
    ("due > '2026-03-20 12:00'", ["DUE-4"]),
    # Relative dates and functions name a day too (now is 2026-03-18 15:30).
    ("due <= 2d", ["DUE-1", "DUE-2", "DUE-3", "DUE-5"]),
    ("due > startOfDay(+1)", ["DUE-1", "DUE-2", "DUE-3", "DUE-4"]),
    ("due >= endOfDay(+2)", ["DUE-1", "DUE-2", "DUE-3", "DUE-4"]),
    ("due < 9999-12-31", ["DUE-1", "DUE-2", "DUE-3", "DUE-4", "DUE-5"]),
    # Sorted by day, so the second key orders each day's items (not their time of day).
    ("due is not empty ORDER BY due ASC, key DESC", ["DUE-5", "DUE-3", "DUE-2", "DUE-1", "DUE-4"]),
    ("due is not empty ORDER BY due DESC, key ASC", ["DUE-4", "DUE-1", "DUE-2", "DUE-3", "DUE-5"]),
])
async def test_due_dates_are_days(
    app_conn: asyncpg.Connection, admin_conn: asyncpg.Connection, make_tenant,
    jql: str, keys: list[str],
) -> None:
    tenant = await make_tenant(name="due")
    await insert_items(admin_conn, tenant.id, DUE_ITEMS)
    assert await run(app_conn, tenant.id, jql) == keys


async def add_comment(conn: asyncpg.Connection, tenant_id: uuid.UUID, key: str,
                      body: str) -> None:
    async with conn.transaction():
        await conn.execute("SELECT set_config('app.tenant_id', $1, true)", str(tenant_id))
        await conn.execute(
            "INSERT INTO comments (tenant_id, work_item_id, body) "
            "SELECT tenant_id, id, $2 FROM work_items WHERE key = $1", key, body)


async def test_text_searches_comments_and_text_custom_fields(
    app_conn: asyncpg.Connection, admin_conn: asyncpg.Connection, make_tenant,
    tenant_items: uuid.UUID,
) -> None:
    """As Jira's text field: summary, description, comments and text custom fields."""
    await add_comment(admin_conn, tenant_items, "JQ-2", "Spotted a Zebra in the logs")
    await add_comment(admin_conn, tenant_items, "JQ-2", "second thought")
    await add_comment(admin_conn, tenant_items, "JQ-4", "nothing striped")
    async with admin_conn.transaction():
        await admin_conn.execute("SELECT set_config('app.tenant_id', $1, true)",
                                 str(tenant_items))
        await admin_conn.execute(
            "UPDATE work_items SET custom_fields = $2 WHERE key = $1", "JQ-7",
            '{"environment": "zebra OS 3", "points": 31337, "tags": ["quagga"]}')
    # Another tenant's comment on its own JQ-3 never makes this tenant's JQ-3 match.
    other = await make_tenant(name="other")
    await insert_items(admin_conn, other.id, [ITEMS[2]])
    await add_comment(admin_conn, other.id, "JQ-3", "quagga")

    assert await run(app_conn, tenant_items, "text ~ zebra") == ["JQ-2", "JQ-7"]
    assert await run(app_conn, tenant_items, "text ~ 'second thought'") == ["JQ-2"]
    assert await run(app_conn, tenant_items, "text !~ zebra") == all_but("JQ-2", "JQ-7")
    # Only string values of custom fields are text; the other tenant's comment is theirs.
    assert await run(app_conn, tenant_items, "text ~ 31337 OR text ~ quagga") == []
    assert await run(app_conn, other.id, "text ~ quagga") == ["JQ-3"]
    # summary and description stay what they are.
    assert await run(app_conn, tenant_items, "summary ~ zebra OR description ~ zebra") == []
    # Unqualified columns: the subqueries name the table itself.
    compiled = compile_jql("text ~ zebra", user=None, now=NOW, alias="")
    async with app_conn.transaction():
        await app_conn.execute("SELECT set_config('app.tenant_id', $1, true)",
                               str(tenant_items))
        rows = await app_conn.fetch(
            f"SELECT key FROM work_items WHERE {compiled.where} ORDER BY number",
            *compiled.params)
    assert [r["key"] for r in rows] == ["JQ-2", "JQ-7"]


async def test_sql_in_a_value_is_only_a_value(
    app_conn: asyncpg.Connection, tenant_items: uuid.UUID,
) -> None:
    assert await run(app_conn, tenant_items, f'summary ~ "{INJECTION}"') == ["JQ-12"]
    assert await run(app_conn, tenant_items, "status = \"Done' OR '1'='1\"") == []
    assert await run(app_conn, tenant_items, "labels = \"x'] OR true --\"") == []
    assert len(await run(app_conn, tenant_items, "")) == len(ITEMS)  # the table is still there


async def test_caller_parameters_first_and_unqualified_columns(
    app_conn: asyncpg.Connection, tenant_items: uuid.UUID,
) -> None:
    compiled = compile_jql("labels = frontend OR priority > high", user=None, now=NOW,
                           first_param=2, alias="")
    async with app_conn.transaction():
        await app_conn.execute("SELECT set_config('app.tenant_id', $1, true)",
                               str(tenant_items))
        rows = await app_conn.fetch(
            f"SELECT key FROM work_items WHERE status_category <> $1 AND ({compiled.where}) "
            "ORDER BY number", "done", *compiled.params)
    assert [r["key"] for r in rows] == ["JQ-1", "JQ-8", "JQ-10"]


async def test_another_tenants_items_never_match(
    app_conn: asyncpg.Connection, admin_conn: asyncpg.Connection, make_tenant,
    tenant_items: uuid.UUID,
) -> None:
    other = await make_tenant(name="other")
    theirs = [("JQ-1", "Login page of the other tenant", None, "bug", "To Do", "todo",
               "critical", "alice", "alice", ["frontend"], None, NOW - timedelta(hours=1),
               NOW - timedelta(hours=1), None, None, "local")]
    await insert_items(admin_conn, other.id, theirs)

    query = "summary ~ 'other tenant' OR (assignee = currentUser() AND created >= -1d)"
    # The same query sees only the current tenant's rows; the key JQ-1 exists in both.
    assert await run(app_conn, tenant_items, query) == ["JQ-8"]
    assert await run(app_conn, other.id, query) == ["JQ-1"]
    assert await run(app_conn, tenant_items, "key = JQ-1 OR summary ~ tenant") == ["JQ-1"]
    async with app_conn.transaction():
        await app_conn.execute("SELECT set_config('app.tenant_id', $1, true)",
                               str(tenant_items))
        titles = await app_conn.fetch("SELECT title FROM work_items w WHERE w.key = 'JQ-1'")
    assert [r["title"] for r in titles] == ["Login page crashes"]
    # No tenant context at all: nothing matches, whatever the query.
    assert await run(app_conn, None, "") == []
