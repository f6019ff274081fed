"""HTTP building blocks shared by the services' APIs."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import sqlalchemy.exc
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.runtime.logs import get_logger

log = get_logger(__name__)

# Probes and scrapes must answer however busy the API is: an overloaded service is not a dead one.
OPS_PATHS = frozenset({"/live", "/health", "/metrics"})


class BodyTooLarge(Exception):
    """The request body passed the configured limit."""


class LimitRequestBody:
    """ASGI middleware: answer 413 to bodies over `max_bytes` before any handler sees them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _too_large(send, self.max_bytes)
            return
        seen = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if not started:
                await _too_large(send, self.max_bytes)


async def _too_large(send: Send, limit: int) -> None:
    await _answer(send, 413, problem(["body"], f"request body exceeds {limit} bytes", "too_large"))


class ShedLoad:
    """ASGI middleware: answer 503 with Retry-After while `limit` requests are already in flight.

    Past the limit a request would only wait for a database connection until its caller gave up
    (a phone sees a timeout and cannot tell whether the report landed). Refused at once, it is
    retried safely (reports carry an Idempotency-Key) and the requests admitted stay fast. Probes,
    scrapes and event streams (`Accept: text/event-stream`, open for hours) are never counted.
    """

    def __init__(
        self, app: ASGIApp, limit: int, retry_after_seconds: int = 1, on_shed: Callable[[], None] | None = None
    ) -> None:
        self.app = app
        self.limit = limit
        self.retry_after = retry_after_seconds
        self.on_shed = on_shed
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in OPS_PATHS or _wants_stream(scope):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            if self.on_shed is not None:
                self.on_shed()
            await unavailable(send, f"overloaded: {self.limit} requests in flight", self.retry_after)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


def _wants_stream(scope: Scope) -> bool:
    return b"text/event-stream" in dict(scope.get("headers") or []).get(b"accept", b"")


async def unavailable(send: Send, reason: str, retry_after_seconds: int) -> None:
    """Send a 503 whose Retry-After tells the caller when to try again."""
    await _answer(
        send, 503, _retry_later(reason, retry_after_seconds), [(b"retry-after", str(retry_after_seconds).encode())]
    )


def _retry_later(reason: str, retry_after_seconds: int) -> dict[str, Any]:
    return problem([], f"{reason}; retry after {retry_after_seconds} s", "unavailable")


# What a request meets when the database is busy (no pooled connection came free in time) or
# unreachable: both pass, so the caller is told to retry instead of being shown a 500.
DATABASE_BUSY: tuple[type[Exception], ...] = (sqlalchemy.exc.TimeoutError,)
DATABASE_UNREACHABLE: tuple[type[Exception], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    ConnectionError,
)


def database_trouble_handler(
    retry_after_seconds: int, on_refused: Callable[[str], None]
) -> Callable[[Request, Exception], Awaitable[Response]]:
    """An exception handler answering 503 + Retry-After to DATABASE_BUSY and DATABASE_UNREACHABLE."""

    async def handle(request: Request, exc: Exception) -> Response:
        reason = "database_busy" if isinstance(exc, DATABASE_BUSY) else "database_unreachable"
        on_refused(reason)
        log.warning("request refused: database trouble", reason=reason, error=type(exc).__name__, path=request.url.path)
        return JSONResponse(
            _retry_later(reason.replace("_", " "), retry_after_seconds),
            status_code=503,
            headers={"Retry-After": str(retry_after_seconds)},
        )

    return handle


async def _answer(
    send: Send, status: int, payload: dict[str, Any], headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    body = json.dumps(payload).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def problem(loc: list[str], msg: str, kind: str) -> dict[str, Any]:
    """A field-level error in the same shape FastAPI uses for validation errors."""
    return {"detail": [{"loc": loc, "msg": msg, "type": kind}]}
