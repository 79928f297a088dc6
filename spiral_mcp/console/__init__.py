"""The web console at /admin (issue 21): server-rendered pages over the same domain functions as
the admin API; changes go through /api/v1 with the session's CSRF token."""

from .app import CONSOLE_PREFIX, console_application

__all__ = ["CONSOLE_PREFIX", "console_application"]
