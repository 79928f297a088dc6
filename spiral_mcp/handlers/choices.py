"""When an argument names several things, a person chooses: the write tools ask instead of
guessing.

``choose_one`` asks the client with an elicitation form (an enum of the candidates) through
``ctx.ask``, which a session answers with a request to the client and the stateless era with a
round trip (see protocol/input_required.py); a client that cannot be asked gets VALIDATION_ERROR
naming the candidates, so the agent can give the exact value. Either way nothing is written
before the choice: callers ask before their write's transaction.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import ErrorCode, ServiceError
from .context import ToolContext

__all__ = ["choose_one", "resolve_assignee", "words"]

# At most this many people offered for one name: a form is read by a person.
_MAX_CANDIDATES = 20


def words(text: str) -> str:
    """``text`` as its lower-case words between single spaces, padded, so that ``words(a) in
    words(b)`` says b contains a's words in a row ("review" in "In Review")."""
    return " " + " ".join(re.split(r"[\W_]+", text.casefold())).strip() + " "


async def choose_one(ctx: ToolContext, *, path: str, field: str, question: str,
                     options: list[str], meaning: str, details: dict[str, Any]) -> str:
    """The option a person chose for the argument at ``path``. ``meaning`` says why there is a
    choice (it goes into the question and into every refusal); ``details`` go into a refusal's
    details. VALIDATION_ERROR when the client cannot be asked, or the answer chose nothing
    offered."""
    def refused(message: str) -> ServiceError:
        return ServiceError(ErrorCode.VALIDATION_ERROR, f"{path}: {message}",
                            details=[{"path": path, "message": meaning, "candidates": options,
                                      **details}])

    if not ctx.can_ask("elicitation/create"):
        raise refused(f"{meaning}. Give one of them exactly.")
    answer = await ctx.ask("elicitation/create", {
        "message": f"{question} {meaning}.",
        "requestedSchema": {
            "type": "object",
            "properties": {field: {"type": "string", "title": field.replace("_", " ").title(),
                                   "enum": options}},
            "required": [field],
        },
    })
    action = answer.get("action")
    chosen = (answer.get("content") or {}).get(field) if action == "accept" else None
    if chosen not in options:
        outcome = f"the answer was {action!r}" if action != "accept" else \
            f"{chosen!r} is not one of them"
        raise refused(f"nothing was chosen ({outcome}), so nothing changed. {meaning}.")
    return chosen


def _like_pattern(text: str) -> str:
    return "%" + re.sub(r"([\\%_])", r"\\\1", text) + "%"


async def resolve_assignee(ctx: ToolContext, assignee: Any, path: str) -> Any:
    """The assignee to store for the one an agent gave. A name the tenant's items already carry,
    an address (with an @), or a name like none of them stands as given. A name that could
    mean several of the tenant's people ("alice" for alice@example.com and
    alice.smith@example.com) is chosen by a person, or refused naming them."""
    if not isinstance(assignee, str) or "@" in assignee or not (given := words(assignee)).strip():
        return assignee
    longest = max(given.split(), key=len)
    async with ctx.transaction(readonly=True) as conn:
        known = await ctx.database.queries.assignees_like(conn, pattern=_like_pattern(longest))
    names = [row["assignee"] for row in known]
    if assignee in names:
        return assignee
    candidates = [name for name in names if given in words(name.split("@", 1)[0])]
    if len(candidates) < 2:
        return assignee
    candidates = candidates[:_MAX_CANDIDATES]
    return await choose_one(
        ctx, path=path, field="assignee", question="Assign to whom?", options=candidates,
        meaning=f"{assignee!r} could mean any of {', '.join(map(repr, candidates))}",
        details={"given": assignee})
