"""The admin API's operations: a registry (``ApiRoutes``) of what each route takes and returns,
and the one place that turns a request into an :class:`ApiCall` and its result or failure into
the envelope.

A resource module declares its operations::

    routes = ApiRoutes()

    @routes.operation("POST", "/keys", summary="Create an API key", body="key_create",
                      response="key_created", status=201)
    async def create_key(call: ApiCall) -> dict[str, Any]: ...

Bodies and queries are checked against their schema (api/schemas/<name>.json) before the handler
runs; query strings are first coerced to the schema's integer, number and boolean types. Path
parameters named ``id`` or ``*_id`` must be UUIDs; anything else is NOT_FOUND naming the thing
(it reveals nothing, and is the answer another tenant's id gets too).
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson
from aiohttp import web

from ..admin import AdminError, AdminNotFound
from ..auth import Principal
from ..db import Database, TenantTransaction
from ..errors import ErrorCode, ServiceError
from ..handlers.arguments import ArgumentCheck
from ..handlers.audit import AuditEntry, redact
from ..queries import Queries
from ..server.keys import DATABASE, REQUEST_ID, SETTINGS
from .envelope import error_response, service_error_response, success_response
from .principal import OPERATOR, TENANT_ADMIN, AdminPrincipal
from .schemas import SchemaBook
from .state import ADMIN_PRINCIPAL

__all__ = ["OPERATOR", "PUBLIC", "TENANT_ADMIN", "ApiCall", "ApiRoutes", "Operation", "api_errors",
           "bind", "is_public", "not_found"]

log = logging.getLogger(__name__)

# A route anyone may read (the OpenAPI document).
PUBLIC = "public"
_ROLES = frozenset({TENANT_ADMIN, OPERATOR, PUBLIC})
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
_PARAM = re.compile(r"\{([a-z_][a-z0-9_]*)\}")

Handler = Callable[["ApiCall"], Awaitable[Any]]


def not_found(thing: str, ident: object) -> ServiceError:
    """NOT_FOUND for ``thing`` ``ident``: the answer to a missing object and another tenant's."""
    if isinstance(ident, uuid.UUID):
        return ServiceError(ErrorCode.NOT_FOUND, f"no {thing} with id {ident}")
    # Text from the path, quoted (and cut: it is the caller's, of any length).
    text = str(ident)
    shown = text if len(text) <= 64 else text[:64] + "..."
    return ServiceError(ErrorCode.NOT_FOUND, f"no {thing} with id {shown!r}")


def _thing(param: str) -> str:
    return "object" if param == "id" else param.removesuffix("_id").replace("_", " ")


@dataclass(frozen=True)
class Operation:
    """One route of the API as the OpenAPI document describes it."""

    method: str
    path: str                    # relative to /api/v1, e.g. "/keys/{key_id}"
    handler: Handler
    summary: str
    body: str | None = None      # schema names in api/schemas/
    query: str | None = None
    response: str | None = None
    status: int = 200
    role: str = TENANT_ADMIN
    # A handler that answers with its own web.Response (chart images, the OpenAPI document),
    # of these media types, rather than with data for the envelope.
    raw: bool = False
    produces: tuple[str, ...] = ("application/json",)
    description: str = ""
    # The audit action of a change ("keys.create"): its refusals are audited under it too.
    audit: str | None = None
    params: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        if self.method not in _METHODS:
            raise ValueError(f"{self.method} {self.path}: unknown method")
        if self.role not in _ROLES:
            raise ValueError(f"{self.method} {self.path}: unknown role {self.role!r}")
        object.__setattr__(self, "params", tuple(_PARAM.findall(self.path)))

    @property
    def operation_id(self) -> str:
        return self.handler.__name__


class ApiRoutes:
    """The operations of one resource module, in the order declared."""

    def __init__(self) -> None:
        self._operations: list[Operation] = []

    def operation(self, method: str, path: str, *, summary: str, body: str | None = None,
                  query: str | None = None, response: str | None = None, status: int = 200,
                  role: str = TENANT_ADMIN, raw: bool = False,
                  produces: tuple[str, ...] = ("application/json",), audit: str | None = None,
                  ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self._operations.append(Operation(
                method, path, handler, summary, body=body, query=query, response=response,
                status=status, role=role, raw=raw, produces=produces,
                description=(handler.__doc__ or "").strip(), audit=audit))
            return handler

        return register

    def __iter__(self) -> Iterator[Operation]:
        return iter(self._operations)


class ApiCall:
    """One call of an operation: who, with what, and the tenant's transaction."""

    __slots__ = (
        "body",
        "database",
        "headers",
        "operation",
        "path",
        "principal",
        "queries",
        "query",
        "request",
        "started",
    )

    def __init__(self, request: web.Request, operation: Operation, *, body: Any,
                 query: dict[str, Any], path: dict[str, Any], started: float) -> None:
        self.request = request
        self.operation = operation
        self.principal: AdminPrincipal | None = request.get(ADMIN_PRINCIPAL)
        self.body = body
        self.query = query
        self.path = path
        self.database: Database = request.config_dict[DATABASE]
        self.queries: Queries = self.database.queries
        self.started = started
        # Headers of the answer the handler adds (Location of an accepted task).
        self.headers: dict[str, str] = {}

    @property
    def admin(self) -> AdminPrincipal:
        """The caller of a non-public route (always set there)."""
        assert self.principal is not None
        return self.principal

    @property
    def tenant_principal(self) -> Principal:
        """The tenant principal (key or OAuth user) of a tenant admin: what tasks, sessions
        and rate limits are keyed by."""
        principal = self.admin.principal
        if principal is None:
            raise ServiceError(ErrorCode.PERMISSION_DENIED, "this route is for tenant admins")
        return principal

    def tenant(self, *, readonly: bool = True) -> TenantTransaction:
        """The caller's tenant transaction (``async with``), as the tools have theirs."""
        tenant_id = self.admin.tenant_id
        if tenant_id is None:
            raise ServiceError(ErrorCode.PERMISSION_DENIED, "this route is for tenant admins")
        return self.database.tenant(tenant_id, readonly=readonly)

    async def audit(self, conn: asyncpg.Connection, action: str, *, arguments: Any,
                    before: Any = None, after: Any = None) -> None:
        """The audit row of a change, in the change's own transaction (both commit or
        neither); ``arguments`` are redacted as a tool's are."""
        await self.queries.insert_audit(conn, **self._entry(
            action, arguments=arguments, before=before, after=after).row())

    async def audit_refusal(self, action: str, code: str) -> None:
        """The audit row of a change refused with ``code``, in a transaction of its own (the
        change's, if it began, rolls back): who tried what, as a tool's failure is kept."""
        entry = self._entry(action, arguments=self.body, outcome="error", error_code=code)
        async with self.tenant(readonly=False) as conn:
            await self.queries.insert_audit(conn, **entry.row())

    def _entry(self, action: str, *, arguments: Any, before: Any = None, after: Any = None,
               outcome: str = "ok", error_code: str | None = None) -> AuditEntry:
        admin = self.admin
        assert admin.tenant_id is not None
        return AuditEntry(
            tenant_id=admin.tenant_id,
            key_id=admin.principal.key_id if admin.principal is not None else None,
            actor=admin.actor, tool=f"admin:{action}", arguments=redact(arguments),
            outcome=outcome, error_code=error_code,
            duration_ms=round((time.perf_counter() - self.started) * 1000, 2),
            request_id=self.request.get(REQUEST_ID), before=before, after=after)


def _coerce(value: str, schema: dict[str, Any]) -> Any:
    """A query string as the type its schema wants; left as it is when it is not one (the
    schema's check then names the parameter)."""
    kind = schema.get("type")
    try:
        if kind == "integer":
            return int(value)
        if kind == "number":
            return float(value)
    except ValueError:
        return value
    if kind == "boolean" and value in ("true", "false"):
        return value == "true"
    return value


@dataclass(frozen=True)
class _Bound:
    """An operation with its validators compiled: the aiohttp handler of its route."""

    operation: Operation
    body_check: ArgumentCheck | None
    query_check: ArgumentCheck | None
    query_schema: dict[str, Any]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        op = self.operation
        principal = request.get(ADMIN_PRINCIPAL)
        if op.role != PUBLIC:
            assert principal is not None, "api/auth.py authenticates every non-public route"
            if op.role == OPERATOR and principal.role != OPERATOR:
                # Says nothing of any tenant.
                raise ServiceError(ErrorCode.PERMISSION_DENIED, "this route is for operators")
            if op.role == TENANT_ADMIN and principal.role != TENANT_ADMIN:
                raise ServiceError(ErrorCode.PERMISSION_DENIED,
                                   "this route is for tenant admins; an operator manages "
                                   "tenants at /api/v1/tenants")
        path = self._path(request)
        body: Any = None
        try:
            body = await self._body(request)
            call = ApiCall(request, op, body=body, query=self._query(request), path=path,
                           started=started)
            result = await op.handler(call)
        except Exception as exc:
            if op.audit is not None and principal.role == TENANT_ADMIN:
                await self._audit_refusal(request, path, body, started, exc)
            raise
        if op.raw:
            return result
        return success_response(result, tenant_id=principal.tenant_id if principal else None,
                                started=started, status=op.status, headers=call.headers)

    async def _audit_refusal(self, request: web.Request, path: dict[str, Any], body: Any,
                             started: float, exc: Exception) -> None:
        """Audit a refused change; a failure to do so is logged, and the refusal still
        answered."""
        assert self.operation.audit is not None
        # What was sent (a body that did not parse: nothing), with the path's ids.
        arguments = {**{name: str(value) for name, value in path.items()},
                     **(body if isinstance(body, dict) else {})}
        call = ApiCall(request, self.operation, body=arguments, query={}, path=path,
                       started=started)
        try:
            await call.audit_refusal(self.operation.audit, _error_code(exc))
        except Exception:
            log.exception("could not audit a refused %s", self.operation.audit)

    def _path(self, request: web.Request) -> dict[str, Any]:
        values: dict[str, Any] = dict(request.match_info)
        for name in self.operation.params:
            if name == "id" or name.endswith("_id"):
                try:
                    values[name] = uuid.UUID(values[name])
                except ValueError:
                    raise not_found(_thing(name), values[name]) from None
        return values

    async def _body(self, request: web.Request) -> Any:
        if self.body_check is None:
            return None
        raw = await request.read()
        if not raw.strip():
            body: Any = {}
        else:
            if request.content_type != "application/json":
                raise ServiceError(ErrorCode.VALIDATION_ERROR,
                                   f"the body must be JSON (Content-Type: application/json), "
                                   f"not {request.content_type}")
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise ServiceError(ErrorCode.VALIDATION_ERROR,
                                   f"the body is not valid JSON: {exc}") from None
        return self.body_check(body)

    def _query(self, request: web.Request) -> dict[str, Any]:
        if self.query_check is None:
            return {}
        properties = self.query_schema.get("properties", {})
        query = {}
        for name in request.query:
            values = request.query.getall(name)
            if len(values) > 1:
                raise ServiceError(ErrorCode.VALIDATION_ERROR,
                                   f"query parameter {name!r} is given {len(values)} times; "
                                   "give it once")
            query[name] = _coerce(values[0], properties.get(name, {}))
        return self.query_check(query)


def _error_code(exc: Exception) -> str:
    """The code the caller is answered with (as api_errors maps it)."""
    if isinstance(exc, ServiceError):
        return str(exc.code)
    if isinstance(exc, AdminNotFound):
        return str(ErrorCode.NOT_FOUND)
    if isinstance(exc, AdminError):
        return str(ErrorCode.VALIDATION_ERROR)
    return str(ErrorCode.INTERNAL_ERROR)


def is_public(request: web.Request) -> bool:
    """Whether the request's route is an operation anyone may call (the OpenAPI document)."""
    bound = getattr(request.match_info.handler, "__self__", None)
    return isinstance(bound, _Bound) and bound.operation.role == PUBLIC


def bind(operation: Operation, book: SchemaBook) -> Callable[[web.Request],
                                                              Awaitable[web.StreamResponse]]:
    """The route handler of ``operation``, its schemas compiled from ``book`` (at start-up)."""
    subject = f"{operation.method} /api/v1{operation.path}"
    if operation.response is not None:
        book.schema(operation.response)  # a missing schema fails at start, not in the document
    return _Bound(
        operation,
        None if operation.body is None else book.check(operation.body, subject=subject,
                                                       noun="body"),
        None if operation.query is None else book.check(operation.query, subject=subject,
                                                        noun="query"),
        {} if operation.query is None else book.schema(operation.query)).handle


@web.middleware
async def api_errors(request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                     ) -> web.StreamResponse:
    """Every failure under /api/v1 as the envelope: named ones at their code's status, an
    unknown route or method too, anything unexpected as INTERNAL_ERROR with the traceback in
    the log only."""
    try:
        return await handler(request)
    except ServiceError as exc:
        return service_error_response(exc)
    except AdminNotFound as exc:
        return error_response(404, str(ErrorCode.NOT_FOUND), str(exc))
    except AdminError as exc:
        return error_response(400, str(ErrorCode.VALIDATION_ERROR), str(exc))
    except web.HTTPMethodNotAllowed as exc:
        allowed = ", ".join(sorted(exc.allowed_methods))
        return error_response(405, str(ErrorCode.VALIDATION_ERROR),
                              f"{request.method} is not allowed on {request.path}; "
                              f"allowed: {allowed}", headers={"Allow": allowed})
    except web.HTTPNotFound:
        return error_response(404, str(ErrorCode.NOT_FOUND),
                              f"no API route {request.path}; the routes are listed in "
                              "/api/v1/openapi.json")
    except web.HTTPRequestEntityTooLarge:
        limit = request.config_dict[SETTINGS].max_body_bytes
        return error_response(413, str(ErrorCode.VALIDATION_ERROR),
                              f"the body is larger than {limit} bytes (MAX_BODY_BYTES)")
    except web.HTTPException:
        raise
    except Exception:
        log.exception("unhandled error in the admin API")
        return error_response(500, str(ErrorCode.INTERNAL_ERROR), "internal error")
