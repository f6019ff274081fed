"""Sign-in: the console issues the shared access tokens (services/runtime/auth.py), sent back as an
HttpOnly cookie or a Bearer header, and forwards the same token to the backends it calls."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from fastapi import Request

from services.runtime.auth import Authenticator, Principal

COOKIE_NAME = "gw_console"


def password_ok(given: str, demo_password: str | None) -> bool:
    """Constant-time check of the shared demo password; no password configured means no sign-in."""
    return demo_password is not None and hmac.compare_digest(given.encode(), demo_password.encode())


def session_token(request: Request) -> str | None:
    """The caller's token: the Bearer header, else the session cookie."""
    header = request.headers.get("authorization", "")
    return header[7:].strip() if header.lower().startswith("bearer ") else request.cookies.get(COOKIE_NAME)


def principal_dependency(auth: Authenticator) -> Callable[[Request], Principal]:
    """A FastAPI dependency: the signed-in principal from the Bearer header or the cookie, else 401."""

    def current_principal(request: Request) -> Principal:
        token = session_token(request)
        principal = auth.principal_of(token)
        request.state.token = token  # forwarded to the backends, which check it again
        return principal

    return current_principal
