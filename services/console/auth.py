"""Sign-in: signed, expiring tokens (itsdangerous), sent as an HttpOnly cookie or a Bearer header."""

from __future__ import annotations

import hmac
from collections.abc import Callable

from fastapi import HTTPException, Request
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from contracts.reference import ReferenceData
from services.console.domain import Principal, principal_for

COOKIE_NAME = "gw_console"


class TokenIssuer:
    """Issues and checks the console's session tokens."""

    def __init__(self, secret: str, max_age_seconds: int) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt="gridwhistle-console")
        self.max_age_seconds = max_age_seconds

    def issue(self, user_id: str) -> str:
        """A token naming the user, signed now."""
        return self._serializer.dumps({"sub": user_id})

    def user_of(self, token: str) -> str | None:
        """The user id of a valid, unexpired token, else None."""
        try:
            claims = self._serializer.loads(token, max_age=self.max_age_seconds)
        except (SignatureExpired, BadSignature):
            return None
        return claims.get("sub") if isinstance(claims, dict) else None


def password_ok(given: str, demo_password: str | None) -> bool:
    """Constant-time check of the shared demo password; no password configured means no sign-in."""
    return demo_password is not None and hmac.compare_digest(given.encode(), demo_password.encode())


def principal_dependency(
    issuer: TokenIssuer, city: ReferenceData, supervisors: tuple[str, ...], admins: tuple[str, ...]
) -> Callable[[Request], Principal]:
    """A FastAPI dependency: the signed-in principal from the Bearer header or the cookie, else 401."""

    def current_principal(request: Request) -> Principal:
        header = request.headers.get("authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else request.cookies.get(COOKIE_NAME)
        user_id = issuer.user_of(token) if token else None
        principal = principal_for(user_id, city, supervisors=supervisors, admins=admins) if user_id else None
        if principal is None:
            raise HTTPException(401, detail="sign in first", headers={"WWW-Authenticate": "Bearer"})
        return principal

    return current_principal
