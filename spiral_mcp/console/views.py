"""Rendering a console page: the template, the navigation of the signed-in role, the CSRF token,
and the filters the templates share (times, durations)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from .state import STATIC_URL, signed_in

__all__ = ["NavItem", "duration", "render", "when"]


@dataclasses.dataclass(frozen=True, slots=True)
class NavItem:
    label: str
    href: str
    current: bool = False


_TENANT_NAV = (("Home", "/admin"), ("Keys", "/admin/keys"), ("Sources", "/admin/sources"),
               ("Projects", "/admin/projects"), ("Usage", "/admin/usage"),
               ("Audit log", "/admin/audit"))
_OPERATOR_NAV = (("Tenants", "/admin/tenants"),)


def _nav(path: str, *, operator: bool) -> list[NavItem]:
    items = _OPERATOR_NAV if operator else _TENANT_NAV
    # The longest matching prefix is the current page (/admin/sources/ID is under Sources).
    best = max((href for _, href in items if path == href or path.startswith(href + "/")),
               key=len, default=None)
    return [NavItem(label, href, href == best) for label, href in items]


def when(value: datetime | str | None, *, seconds: bool = False) -> str:
    """A moment (or its ISO text, as JSON-ready datasets carry it) as UTC text; a dash for
    none."""
    if value is None:
        return "—"
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC" if seconds
                                          else "%Y-%m-%d %H:%M UTC")


def duration(ms: float | None) -> str:
    """Milliseconds as a person reads them: 0.8 ms, 120 ms, 3.4 s, 2 min 5 s."""
    if ms is None:
        return "—"
    if ms < 10:
        return f"{ms:.1f} ms"
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    minutes, rest = divmod(round(ms / 1000), 60)
    return f"{minutes} min {rest} s"


def render(request: web.Request, template: str, context: dict[str, Any], *,
           status: int = 200) -> web.Response:
    """The page ``template`` for the signed-in admin (``context`` adds the page's own data)."""
    admin = signed_in(request)
    operator = admin.role == "operator"
    base = {
        "nav": _nav(request.path, operator=operator),
        "who": {"name": admin.actor, "detail": "operator" if operator
                else f"tenant {admin.tenant_id}"},
        "csrf_token": admin.session.csrf_token if admin.session is not None else "",
        "static_url": STATIC_URL,
    }
    return aiohttp_jinja2.render_template(template, request, {**base, **context}, status=status)
