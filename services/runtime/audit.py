"""The access audit trail: one row per state-changing HTTP request, in the service's own database.

Every POST/PUT/PATCH/DELETE under /api/ or /open311/ ends as exactly one `access_audit` row with
actor, role, action, target, outcome (accepted, refused, failed) and the HTTP status, refused
attempts included (no token, a bad or expired one, the wrong role, someone else's grid or unit).

A command that changes state writes its row inside its own transaction (`AuditTrail.accepted`),
so an accepted action and its audit row commit together or not at all. Everything else (a
refusal, a replayed idempotent request, a validation error) is written by the middleware once the
status is known, in a transaction of its own. A request shed for overload (503 before any
handler, see `services.runtime.http.ShedLoad`) touched nothing and leaves no row; it is counted
in `gridwhistle_<service>_http_requests_refused_total{reason="overloaded"}`.
"""

from __future__ import annotations

import json
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, Index, Integer, MetaData, String, Table, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.runtime.clock import Clock
from services.runtime.db import Serial, UTCDateTime
from services.runtime.logs import get_logger

if TYPE_CHECKING:
    from services.runtime.auth import Principal
    from services.runtime.outbox import UnitOfWork

log = get_logger(__name__)

TABLE = "access_audit"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
AUDITED_PREFIXES = ("/api/", "/open311/")
_TARGET_PARAMS = (("incident_id", "incident"), ("handoff_id", "handoff"), ("deadline_id", "deadline"), ("request_id", "incident"))
_BODY_SNIPPET = 4096


def add_audit_table(metadata: MetaData) -> Table:
    """Define (once) the access audit table on a service's metadata."""
    if TABLE in metadata.tables:
        return metadata.tables[TABLE]
    table = Table(
        TABLE,
        metadata,
        Column("id", Serial, primary_key=True, autoincrement=True),
        Column("at", UTCDateTime, nullable=False),
        # Empty when the caller could not be identified (no token, a forged one).
        Column("actor", String(64), nullable=False),
        Column("role", String(20), nullable=False),
        Column("action", String(64), nullable=False),
        Column("target", String(200), nullable=False),
        Column("outcome", String(8), nullable=False),
        Column("status", Integer, nullable=False),
        Column("request", String(300), nullable=False),
        Column("reason", String(500), nullable=False),
    )
    Index("ix_access_audit_target", table.c.target)
    Index("ix_access_audit_at", table.c.at)
    return table


@dataclass
class AuditContext:
    """What one request has told the audit trail so far."""

    scope: Scope
    principal: Principal | None = None
    action: str | None = None
    target: str | None = None
    reason: str = ""
    recorded: bool = False
    snippet: bytearray = field(default_factory=bytearray)

    def mark_recorded(self) -> None:
        """The request's row committed with its state change; the middleware writes none."""
        self.recorded = True

    @property
    def request_line(self) -> str:
        """`METHOD /path` of the request."""
        return f"{self.scope.get('method', '')} {self.scope.get('path', '')}"[:300]

    def route_action(self) -> str:
        """The action: what the handler said, else the route's name, else the path."""
        if self.action:
            return self.action
        route = self.scope.get("route")
        return str(getattr(route, "name", None) or self.scope.get("path", ""))[:64]

    def route_target(self) -> str:
        """The target: what the handler said, else the incident/handoff/deadline the path names."""
        if self.target:
            return self.target[:200]
        params = self.scope.get("path_params") or {}
        for name, kind in _TARGET_PARAMS:
            if params.get(name):
                return f"{kind}:{params[name]}"[:200]
        return str(self.scope.get("path", ""))[:200]

    def route_status(self) -> int:
        """The status the route answers with on success."""
        return int(getattr(self.scope.get("route"), "status_code", None) or 200)


_current: ContextVar[AuditContext | None] = ContextVar("gridwhistle_audit", default=None)


def note_principal(principal: Principal) -> None:
    """The authenticated caller of the current request (no-op outside an audited request)."""
    ctx = _current.get()
    if ctx is not None:
        ctx.principal = principal


def note(*, action: str | None = None, target: str | None = None, reason: str | None = None) -> None:
    """Name the action, target or reason of the current request more precisely than its route does."""
    ctx = _current.get()
    if ctx is None:
        return
    if action:
        ctx.action = action
    if target:
        ctx.target = target
    if reason:
        ctx.reason = reason


def outcome_of(status: int) -> str:
    """accepted (2xx/3xx), refused (4xx) or failed (5xx)."""
    return "accepted" if status < 400 else "refused" if status < 500 else "failed"


def _detail(snippet: bytes) -> str:
    """The error message of a JSON error body (FastAPI's detail, GeoReport's description)."""
    try:
        body = json.loads(snippet.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return ""
    if isinstance(body, list) and body and isinstance(body[0], dict):
        return str(body[0].get("description", ""))
    if isinstance(body, dict):
        detail = body.get("detail", "")
        if isinstance(detail, list):
            return "; ".join(str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail)
        if isinstance(detail, dict):
            return str(detail.get("message") or detail.get("code") or detail)
        return str(detail)
    return ""


class AuditTrail:
    """Writes a service's access audit rows."""

    def __init__(self, engine: AsyncEngine, table: Table, clock: Clock) -> None:
        self.engine = engine
        self.table = table
        self.clock = clock

    def _row(self, ctx: AuditContext, *, status: int, reason: str) -> dict[str, Any]:
        principal = ctx.principal
        return {
            "at": self.clock.now(),
            "actor": principal.user_id[:64] if principal else "",
            "role": principal.role.value if principal else "",
            "action": ctx.route_action(),
            "target": ctx.route_target(),
            "outcome": outcome_of(status),
            "status": status,
            "request": ctx.request_line,
            "reason": reason[:500],
        }

    async def accepted(self, uow: UnitOfWork, *, target: str | None = None, reason: str = "applied") -> None:
        """Record the current request as accepted inside the transaction that applies it."""
        ctx = _current.get()
        if ctx is None:
            return  # not an HTTP request (a consumer, a test calling the use case directly)
        if target:
            ctx.target = target
        await uow.conn.execute(self.table.insert().values(self._row(ctx, status=ctx.route_status(), reason=reason)))
        uow.after_commit(ctx.mark_recorded)

    async def finish(self, ctx: AuditContext, status: int) -> None:
        """The middleware's row for a request no transaction recorded; never raises."""
        reason = ctx.reason or (_detail(bytes(ctx.snippet)) if status >= 400 else "")
        try:
            async with self.engine.begin() as conn:
                await conn.execute(self.table.insert().values(self._row(ctx, status=status, reason=reason)))
        except Exception as exc:  # noqa: BLE001 - the answer is already sent; say so loudly
            log.error("audit row not written", request=ctx.request_line, status=status, error=repr(exc)[:300])


class AuditMiddleware:
    """ASGI middleware: an audit row for every state-changing request under /api/ and /open311/."""

    def __init__(self, app: ASGIApp, trail: AuditTrail) -> None:
        self.app = app
        self.trail = trail

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        audited = (
            scope["type"] == "http"
            and scope.get("method") not in SAFE_METHODS
            and str(scope.get("path", "")).startswith(AUDITED_PREFIXES)
        )
        if not audited:
            await self.app(scope, receive, send)
            return
        ctx = AuditContext(scope)
        token = _current.set(ctx)
        status = 500

        async def tracking_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body" and status >= 400 and len(ctx.snippet) < _BODY_SNIPPET:
                ctx.snippet.extend(message.get("body", b"")[: _BODY_SNIPPET - len(ctx.snippet)])
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        finally:
            _current.reset(token)
            if not ctx.recorded:
                await self.trail.finish(ctx, status)


async def audit_rows(conn: AsyncConnection, table: Table, target: str | None = None) -> list[dict[str, Any]]:
    """Audit rows (of one target when given), oldest first."""
    query = select(table).order_by(table.c.id)
    if target is not None:
        query = query.where(table.c.target == target)
    return [dict(row._mapping) for row in (await conn.execute(query)).all()]
