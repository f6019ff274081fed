"""Who is calling: signed, expiring bearer tokens that carry the principal, checked by every service.

A token is itsdangerous' URL-safe serializer (HMAC-SHA256, salt `gridwhistle.access.v1`) over
compact JSON claims::

    {"v": 1, "sub": "W0001", "role": "grid_worker", "grids": ["G0001"], "name": "网格员 W0001",
     "iat": 1767254400, "exp": 1767297600}
    {"v": 1, "sub": "desk-S0101-1", "role": "dispatcher", "unit": "U-DESK-S0101",
     "district": "D01", "station": "S0101", ...}

The issuer (the console's sign-in, or `python -m services.runtime.auth token USER`) resolves the
role and scope from the reference data once; a service trusts the signed claims and never the
request body. `iat`/`exp` come from the service's injected clock, so tests move time to expire a
token. One secret (`GW_AUTH_TOKEN_SECRET`) is shared by all services; older secrets in
`GW_AUTH_PREVIOUS_TOKEN_SECRETS` still verify during a rotation. The development default is
refused unless `GW_AUTH_DEV_MODE` is on (`make run` and the tests turn it on).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from fastapi import Request, Security
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from itsdangerous import BadSignature, URLSafeSerializer

from contracts.reference import ReferenceData, load_reference_data
from services.runtime import audit
from services.runtime.clock import Clock, SystemClock
from services.runtime.settings import DEV_TOKEN_SECRET, ServiceSettings

TOKEN_SALT = "gridwhistle.access.v1"
TOKEN_VERSION = 1
MIN_SECRET_LENGTH = 32
# Open311 clients get this key in development only (GW_AUTH_DEV_MODE); real keys are configured.
DEV_OPEN311_API_KEY = "demo-open311-key"


class Role(StrEnum):
    """What a caller is to gridwhistle."""

    GRID_WORKER = "grid_worker"
    RESPONDER = "responder"
    DISPATCHER = "dispatcher"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"
    # A city app filing GeoReport (Open311) requests with an api_key; not a person.
    INTEGRATION = "integration"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller and the area they answer for."""

    user_id: str
    role: Role
    name: str = ""
    grid_ids: frozenset[str] = frozenset()
    unit_id: str | None = None
    district_id: str | None = None
    station_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form for the web app."""
        return {
            "user_id": self.user_id,
            "role": self.role.value,
            "name": self.name,
            "grid_ids": sorted(self.grid_ids),
            "unit_id": self.unit_id,
            "district_id": self.district_id,
            "station_id": self.station_id,
        }

    def claims(self) -> dict[str, Any]:
        """The token claims naming this principal (empty scope parts left out)."""
        claims: dict[str, Any] = {"sub": self.user_id, "role": self.role.value}
        if self.name:
            claims["name"] = self.name
        if self.grid_ids:
            claims["grids"] = sorted(self.grid_ids)
        for key, value in (("unit", self.unit_id), ("district", self.district_id), ("station", self.station_id)):
            if value:
                claims[key] = value
        return claims

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any]) -> Principal:
        """The principal a verified token names; ValueError when the claims are malformed."""
        user_id, grids = claims.get("sub"), claims.get("grids", [])
        if not isinstance(user_id, str) or not user_id or not isinstance(grids, list):
            raise ValueError("token claims lack a subject")
        optional = {k: claims.get(k) for k in ("unit", "district", "station", "name")}
        if not all(v is None or isinstance(v, str) for v in optional.values()):
            raise ValueError("token scope claims must be strings")
        return cls(
            user_id=user_id,
            role=Role(claims.get("role")),
            name=optional["name"] or "",
            grid_ids=frozenset(str(g) for g in grids),
            unit_id=optional["unit"],
            district_id=optional["district"],
            station_id=optional["station"],
        )


def resolve_principal(
    user_id: str, city: ReferenceData, *, supervisors: Iterable[str], admins: Iterable[str]
) -> Principal | None:
    """The principal a user id stands for in the reference data, or None for an unknown id.

    A grid worker answers for the grids that name them, a unit member for their unit, a
    duty-desk member dispatches for their station, a command-centre member for their district.
    Supervisors and admins are named in settings, since reference data has none.
    """
    if user_id in set(admins):
        return Principal(user_id, Role.ADMIN, name="管理员")
    if user_id in set(supervisors):
        return Principal(user_id, Role.SUPERVISOR, name="督查")
    grids = frozenset(g.id for g in city.grids if user_id in g.grid_worker_ids)
    if grids:
        return Principal(user_id, Role.GRID_WORKER, name=f"网格员 {user_id}", grid_ids=grids)
    for unit in city.units:
        if user_id not in unit.members:
            continue
        if unit.kind == "duty_desk":
            return Principal(
                user_id, Role.DISPATCHER, name=unit.name, unit_id=unit.id,
                district_id=unit.district_id, station_id=unit.station_id,
            )
        if unit.kind == "command_centre":
            return Principal(user_id, Role.DISPATCHER, name=unit.name, unit_id=unit.id, district_id=unit.district_id)
        return Principal(user_id, Role.RESPONDER, name=unit.name, unit_id=unit.id, district_id=unit.district_id)
    return None


class AccessError(Exception):
    """A request refused for who is asking: 401 (who are you?) or 403 (not you, not here)."""

    def __init__(self, status: int, code: str, message: str, principal: Principal | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        # Who it was, when that is known for sure (an expired but genuine token): for the audit trail.
        self.principal = principal


def unauthenticated(code: str, message: str) -> AccessError:
    """401: no usable credentials."""
    return AccessError(401, code, message)


def forbidden(message: str, code: str = "forbidden") -> AccessError:
    """403: a known caller who may not do or see this."""
    return AccessError(403, code, message)


async def access_error_response(_request: Request, exc: Exception) -> JSONResponse:
    """`{"detail": "...", "code": "..."}` with the status; 401 also says how to authenticate."""
    assert isinstance(exc, AccessError)
    headers = {"WWW-Authenticate": 'Bearer realm="gridwhistle"'} if exc.status == 401 else None
    return JSONResponse({"detail": exc.message, "code": exc.code}, status_code=exc.status, headers=headers)


class TokenCodec:
    """Issues and verifies bearer tokens with the shared secret (older secrets still verify)."""

    def __init__(self, secret: str, *, previous: Iterable[str] = (), ttl_seconds: int, clock: Clock | None = None) -> None:
        # itsdangerous signs with the last key and tries every key when verifying.
        keys = [*previous, secret]
        self._serializer = URLSafeSerializer(keys, salt=TOKEN_SALT, signer_kwargs={"digest_method": hashlib.sha256})
        self.ttl_seconds = ttl_seconds
        self.clock: Clock = clock or SystemClock()

    def issue(self, principal: Principal, *, ttl_seconds: int | None = None, now: datetime | None = None) -> str:
        """A token naming `principal`, valid from now for `ttl_seconds` (default: the configured TTL)."""
        issued = int((now or self.clock.now()).timestamp())
        ttl = self.ttl_seconds if ttl_seconds is None else ttl_seconds
        return str(self._serializer.dumps({"v": TOKEN_VERSION, **principal.claims(), "iat": issued, "exp": issued + ttl}))

    def verify(self, token: str) -> Principal:
        """The principal of a valid, unexpired token; AccessError 401 otherwise."""
        try:
            claims = self._serializer.loads(token)
        except BadSignature:
            raise unauthenticated("token_invalid", "the bearer token is not signed by gridwhistle") from None
        if not isinstance(claims, dict) or claims.get("v") != TOKEN_VERSION or not isinstance(claims.get("exp"), int):
            raise unauthenticated("token_invalid", "the bearer token is not a gridwhistle access token")
        try:
            principal = Principal.from_claims(claims)
        except ValueError as exc:
            raise unauthenticated("token_invalid", f"the bearer token's claims are unusable: {exc}") from None
        if self.clock.now().timestamp() >= claims["exp"]:
            raise AccessError(401, "token_expired", "the bearer token has expired; sign in again", principal)
        return principal


class InsecureAccessSettings(RuntimeError):
    """The service was asked to run with a secret it must not use outside development."""


def check_access_settings(settings: ServiceSettings) -> None:
    """Refuse the development secret (or a short one) unless GW_AUTH_DEV_MODE is on."""
    if settings.auth_dev_mode:
        return
    if settings.auth_token_secret == DEV_TOKEN_SECRET:
        raise InsecureAccessSettings(
            "GW_AUTH_TOKEN_SECRET is the development default; set a random secret shared by every "
            "service (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`), "
            "or GW_AUTH_DEV_MODE=1 on a laptop"
        )
    if len(settings.auth_token_secret) < MIN_SECRET_LENGTH:
        raise InsecureAccessSettings(f"GW_AUTH_TOKEN_SECRET must be at least {MIN_SECRET_LENGTH} characters")


def codec_for(settings: ServiceSettings, clock: Clock | None = None) -> TokenCodec:
    """The token codec configured by a service's settings."""
    return TokenCodec(
        settings.auth_token_secret,
        previous=settings.auth_previous_token_secrets,
        ttl_seconds=settings.auth_token_ttl_seconds,
        clock=clock,
    )


BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="bearer",
    description="A gridwhistle access token: `POST :8080/api/v1/login` or `python -m services.runtime.auth token USER`.",
)


class Authenticator:
    """The FastAPI dependency every /api route of a service uses: the caller from the Bearer token."""

    def __init__(self, codec: TokenCodec) -> None:
        self.codec = codec

    def principal_of(self, token: str | None) -> Principal:
        """Verify a raw token (from a header or a cookie); the principal is noted for the audit trail."""
        if not token:
            raise unauthenticated("token_missing", "send a bearer token: Authorization: Bearer <token>")
        try:
            principal = self.codec.verify(token)
        except AccessError as refused:
            if refused.principal is not None:
                audit.note_principal(refused.principal)
            raise
        audit.note_principal(principal)
        return principal

    async def principal(self, credentials: HTTPAuthorizationCredentials | None = Security(BEARER)) -> Principal:
        """The authenticated caller; 401 without a valid, unexpired token."""
        return self.principal_of(credentials.credentials if credentials else None)


class ApiKeys:
    """GeoReport v2 `api_key`s of integration clients (key -> client id), compared in constant time."""

    def __init__(self, keys: Mapping[str, str], *, dev_mode: bool) -> None:
        self._keys = dict(keys)
        if dev_mode:
            self._keys.setdefault(DEV_OPEN311_API_KEY, "demo-city-app")

    def principal_for(self, api_key: str | None) -> Principal | None:
        """The integration principal of a configured key, else None."""
        if not api_key:
            return None
        found = None
        for key, client in self._keys.items():
            if hmac.compare_digest(key.encode(), api_key.encode()):
                found = client
        if found is None:
            return None
        principal = Principal(found, Role.INTEGRATION, name=f"integration {found}")
        audit.note_principal(principal)
        return principal


def main(argv: list[str] | None = None) -> int:
    """CLI: `token USER_ID [--ttl SECONDS]` prints a token for a user of the reference data."""
    parser = argparse.ArgumentParser(prog="python -m services.runtime.auth", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    token = sub.add_parser("token", help="print an access token for a user (GW_AUTH_* settings, reference data)")
    token.add_argument("user_id")
    token.add_argument("--ttl", type=int, default=None, help="seconds the token is valid (default GW_AUTH_TOKEN_TTL_SECONDS)")
    token.add_argument("--reference-data", default=None, help="reference data file or CSV directory (default: the demo city)")
    args = parser.parse_args(argv)
    settings = ServiceSettings()
    city = load_reference_data(args.reference_data or settings.reference_data)
    principal = resolve_principal(args.user_id, city, supervisors=settings.auth_supervisors, admins=settings.auth_admins)
    if principal is None:
        print(f"unknown user {args.user_id!r}: not in the reference data, GW_AUTH_SUPERVISORS or GW_AUTH_ADMINS", file=sys.stderr)
        return 2
    if settings.auth_token_secret == DEV_TOKEN_SECRET:
        # Harmless: only a service in dev mode accepts what the development secret signs.
        print("note: signed with the development secret (accepted only with GW_AUTH_DEV_MODE=1)", file=sys.stderr)
    print(codec_for(settings).issue(principal, ttl_seconds=args.ttl))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
