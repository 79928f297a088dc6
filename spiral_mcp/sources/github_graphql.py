"""What the GitHub source asks GitHub's GraphQL API (v4), and how it reads the answers.

A sync reads each page of a repository's issues in one query, with each issue's fields, labels
(GitHub allows 100 an issue) and assignees (10) whole, and the first page of its timeline: its
status moves (closed and reopened events) and comments, oldest first. A longer timeline is read on
by follow-up queries, the next pages of up to :data:`FOLLOW_UPS` issues' timelines each, through
``node(id:)`` aliases. The REST API would take a request per issue for its events and another for
its comments.

GitHub charges a query in points ("Rate limits and query limits for the GraphQL API"): each
connection costs as many requests as its parent connections can hold, the sum divided by 100 and
rounded, at least 1. A page of 100 issues is 1 + 3 x 100 requests (labels, assignees and timeline
of each), 3 points; a follow-up of 50 timelines is 50 requests, 1 point. A token has 5,000 points
an hour, apart from its 5,000 REST requests.

Errors come in a 200 (``errors``); a refusal for rate is the client's to wait out (see
``base._rate_limit_wait``), the rest are :func:`graphql_error`. Older GitHub Enterprise Servers lack
two fields asked for (``issueType``, ``fullDatabaseId``): :func:`legacy` is a query without them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .base import SourceError

__all__ = ["FOLLOW_UPS", "ISSUES_QUERY", "NEWER_FIELDS", "TIMELINE_QUERY", "follow_up_query",
           "graphql_error", "graphql_url", "legacy", "missing_field", "node_of", "timeline_of"]

FOLLOW_UPS = 50
_ITEM_TYPES = "[CLOSED_EVENT, REOPENED_EVENT, ISSUE_COMMENT]"
_TIMELINE_FRAGMENT = """
fragment timeline on IssueTimelineItemsConnection {
  pageInfo { hasNextPage endCursor }
  nodes {
    __typename
    ... on ClosedEvent { createdAt stateReason actor { login } }
    ... on ReopenedEvent { createdAt actor { login } }
    ... on IssueComment { fullDatabaseId body createdAt updatedAt author { login } }
  }
}"""
ISSUES_QUERY = """
query($owner: String!, $name: String!, $first: Int!, $after: String, $filterBy: IssueFilters) {
  rateLimit { cost }
  repository(owner: $owner, name: $name) {
    issues(first: $first, after: $after, filterBy: $filterBy,
           orderBy: {field: UPDATED_AT, direction: ASC}) {
      pageInfo { hasNextPage endCursor }
      nodes {
        id fullDatabaseId number title body state stateReason createdAt updatedAt closedAt url
        author { login }
        labels(first: 100) { nodes { name } }
        assignees(first: 10) { nodes { login } }
        milestone { dueOn }
        issueType { name }
        timelineItems(first: 50, itemTypes: ITEM_TYPES) { ...timeline }
      }
    }
  }
}""".replace("ITEM_TYPES", _ITEM_TYPES) + _TIMELINE_FRAGMENT
# A written issue's timeline (the write's REST answer has everything else).
TIMELINE_QUERY = """
query($owner: String!, $name: String!, $number: Int!) {
  rateLimit { cost }
  repository(owner: $owner, name: $name) {
    issue(number: $number) { id timelineItems(first: 100, itemTypes: ITEM_TYPES) { ...timeline } }
  }
}""".replace("ITEM_TYPES", _ITEM_TYPES) + _TIMELINE_FRAGMENT
# Fields only newer servers have, and what older ones have instead (None: nothing).
NEWER_FIELDS = {"issueType": None, "fullDatabaseId": "databaseId"}


def graphql_url(base_url: str) -> str:
    """GitHub's GraphQL endpoint beside a REST base URL: ``https://api.github.com/graphql``,
    and ``https://HOST/api/graphql`` for GitHub Enterprise Server's ``https://HOST/api/v3``."""
    base = base_url.rstrip("/")
    return f"{base.removesuffix('/v3')}/graphql" if base.endswith("/api/v3") else f"{base}/graphql"


def follow_up_query(count: int) -> str:
    """The next page of ``count`` issues' timelines: alias ``t<n>`` reads issue ``$id<n>`` from
    the cursor ``$after<n>``."""
    variables = ", ".join(f"$id{n}: ID!, $after{n}: String!" for n in range(count))
    reads = "\n".join(f"  t{n}: node(id: $id{n}) {{ ... on Issue {{ timelineItems(first: 100, "
                      f"after: $after{n}, itemTypes: {_ITEM_TYPES}) {{ ...timeline }} }} }}"
                      for n in range(count))
    return f"query({variables}) {{\n  rateLimit {{ cost }}\n{reads}\n}}" + _TIMELINE_FRAGMENT


def legacy(query: str) -> str:
    """``query`` for a server without :data:`NEWER_FIELDS`."""
    for field, instead in NEWER_FIELDS.items():
        query = (query.replace(f" {field} {{ name }}", "") if instead is None
                 else query.replace(f" {field} ", f" {instead} "))
    return query


def missing_field(error: Any) -> str | None:
    """The field a GraphQL error says the schema lacks (``undefinedField``), if it says so."""
    extensions = error.get("extensions") if isinstance(error, dict) else None
    if isinstance(extensions, dict) and extensions.get("code") == "undefinedField":
        return extensions.get("fieldName")
    return None


def graphql_error(base_url: str, errors: list[Any]) -> SourceError:
    """A query's ``errors`` as one SourceError, its kind from the first one's ``type``."""
    kinds = {"NOT_FOUND": "not_found", "FORBIDDEN": "forbidden",
             "INSUFFICIENT_SCOPES": "forbidden"}
    first = errors[0] if isinstance(errors[0], dict) else {}
    text = "; ".join(str(e.get("message") if isinstance(e, dict) else e) for e in errors)
    return SourceError(kinds.get(first.get("type"), "bad_response"),
                       f"{base_url} refused a GraphQL query: {' '.join(text.split())[:200]}")


def timeline_of(issue: Mapping[str, Any]) -> dict[str, Any]:
    """An issue's timeline as read so far (``nodes`` and ``pageInfo``), to read on into."""
    timeline: dict[str, Any] = issue["timelineItems"]
    timeline.setdefault("nodes", [])
    timeline.setdefault("pageInfo", {"hasNextPage": False})
    return timeline


def node_of(issue: Mapping[str, Any]) -> dict[str, Any]:
    """A REST issue (a write's answer) in the GraphQL shape items are made from, with no
    timeline yet."""
    milestone, issue_type = issue.get("milestone"), issue.get("type")
    return {
        "id": issue.get("node_id"), "fullDatabaseId": str(issue["id"]),
        "number": issue["number"], "title": issue.get("title"), "body": issue.get("body"),
        "state": issue["state"].upper(),
        "stateReason": (issue.get("state_reason") or "").upper() or None,
        "createdAt": issue["created_at"], "updatedAt": issue["updated_at"],
        "closedAt": issue.get("closed_at"), "url": issue.get("html_url"),
        "author": {"login": issue["user"].get("login")} if issue.get("user") else None,
        "labels": {"nodes": [{"name": x["name"]} for x in issue.get("labels") or []]},
        "assignees": {"nodes": [{"login": x["login"]} for x in issue.get("assignees") or []]},
        "milestone": {"dueOn": milestone.get("due_on")} if milestone else None,
        "issueType": {"name": issue_type.get("name")} if issue_type else None,
        "timelineItems": {},
    }
