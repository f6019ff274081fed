"""Access tokens, the refusal of the development secret, API keys and the token CLI, without a server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from contracts.reference import demo_city
from services.routing.app import create_app as create_routing
from services.routing.settings import RoutingSettings
from services.runtime import auth
from services.runtime.access import Action, Scope, authorize
from services.runtime.audit import outcome_of
from services.runtime.auth import (
    DEV_OPEN311_API_KEY,
    AccessError,
    ApiKeys,
    InsecureAccessSettings,
    Principal,
    Role,
    TokenCodec,
    check_access_settings,
    resolve_principal,
)
from services.runtime.clock import FakeClock
from services.runtime.settings import DEV_TOKEN_SECRET, ServiceSettings

CITY = demo_city()
SECRET = "a-test-secret-that-is-long-enough-0123456789"
T0 = datetime(2026, 1, 1, 8, tzinfo=UTC)


def who(user_id: str) -> Principal:
    principal = resolve_principal(user_id, CITY, supervisors=("sup-1",), admins=("admin",))
    assert principal is not None
    return principal


def refusal(codec: TokenCodec, token: str) -> AccessError:
    with pytest.raises(AccessError) as caught:
        codec.verify(token)
    return caught.value


def test_a_token_carries_the_principal_with_its_scope_resolved_from_the_reference_data():
    codec = TokenCodec(SECRET, ttl_seconds=3600, clock=FakeClock(T0))
    for user in ("W0001", "P0001", "desk-S0101-1", "cmd-D01-1", "sup-1", "admin"):
        assert codec.verify(codec.issue(who(user))) == who(user)
    desk = codec.verify(codec.issue(who("desk-S0101-1")))
    assert (desk.role, desk.unit_id, desk.district_id, desk.station_id) == (Role.DISPATCHER, "U-DESK-S0101", "D01", "S0101")
    assert codec.verify(codec.issue(who("W0001"))).grid_ids == {"G0001"}


def test_a_token_expires_after_its_lifetime_by_the_injected_clock():
    clock = FakeClock(T0)
    codec = TokenCodec(SECRET, ttl_seconds=600, clock=clock)
    token = codec.issue(who("P0001"))
    clock.advance(timedelta(seconds=599))
    assert codec.verify(token).user_id == "P0001"
    clock.advance(timedelta(seconds=1))
    expired = refusal(codec, token)
    assert (expired.status, expired.code) == (401, "token_expired")
    assert expired.principal == who("P0001")  # genuine, so the audit trail may name them
    short = codec.issue(who("P0001"), ttl_seconds=60)
    clock.advance(timedelta(seconds=60))
    assert refusal(codec, short).code == "token_expired"


def test_tampered_or_foreign_tokens_are_refused():
    codec = TokenCodec(SECRET, ttl_seconds=3600, clock=FakeClock(T0))
    token = codec.issue(who("W0001"))
    payload, signature = token.rsplit(".", 1)
    tampered = ("f" if payload[1] != "f" else "e").join((payload[0], payload[2:])) + "." + signature
    assert refusal(codec, tampered).code == "token_invalid"
    other = TokenCodec("another-secret-that-is-long-enough-0123456789", ttl_seconds=3600, clock=FakeClock(T0))
    assert refusal(other, token).code == "token_invalid"
    assert refusal(codec, "").code == "token_invalid"
    # The console's old session tokens (another salt) are no access tokens.
    from itsdangerous import URLSafeTimedSerializer

    old = URLSafeTimedSerializer(SECRET, salt="gridwhistle-console").dumps({"sub": "admin"})
    assert refusal(codec, old).code == "token_invalid"


def test_a_rotated_out_secret_still_verifies_until_it_is_dropped():
    clock = FakeClock(T0)
    old = TokenCodec("the-old-secret-that-is-long-enough-0123456789", ttl_seconds=3600, clock=clock)
    token = old.issue(who("cmd-D01-1"))
    rotating = TokenCodec(SECRET, previous=["the-old-secret-that-is-long-enough-0123456789"], ttl_seconds=3600, clock=clock)
    assert rotating.verify(token).user_id == "cmd-D01-1"
    assert TokenCodec(SECRET, ttl_seconds=3600, clock=clock).verify(rotating.issue(who("W0001"))).user_id == "W0001"
    assert refusal(TokenCodec(SECRET, ttl_seconds=3600, clock=clock), token).code == "token_invalid"


def test_services_refuse_the_development_secret_unless_dev_mode_is_on(tmp_path):
    url = f"sqlite+aiosqlite:///{tmp_path}/routing.db"
    with pytest.raises(InsecureAccessSettings, match="GW_AUTH_TOKEN_SECRET is the development default"):
        create_routing(RoutingSettings(database_url=url, auth_dev_mode=False))
    with pytest.raises(InsecureAccessSettings, match="at least 32 characters"):
        check_access_settings(ServiceSettings(auth_dev_mode=False, auth_token_secret="short"))
    check_access_settings(ServiceSettings(auth_dev_mode=False, auth_token_secret=SECRET))
    check_access_settings(ServiceSettings(auth_dev_mode=True, auth_token_secret=DEV_TOKEN_SECRET))
    create_routing(RoutingSettings(database_url=url, auth_dev_mode=False, auth_token_secret=SECRET))


def test_access_settings_come_from_shared_env_names(monkeypatch):
    monkeypatch.setenv("GW_AUTH_TOKEN_SECRET", SECRET)
    monkeypatch.setenv("GW_AUTH_DEV_MODE", "0")
    monkeypatch.setenv("GW_AUTH_TOKEN_TTL_SECONDS", "900")
    monkeypatch.setenv("GW_AUTH_SUPERVISORS", '["sup-1", "sup-2"]')
    settings = RoutingSettings()
    assert (settings.auth_token_secret, settings.auth_dev_mode, settings.auth_token_ttl_seconds) == (SECRET, False, 900)
    assert settings.auth_supervisors == ("sup-1", "sup-2")
    assert SECRET not in repr(settings)


def test_open311_api_keys_map_to_integration_principals_and_the_demo_key_only_in_dev_mode():
    keys = ApiKeys({"k-1": "city-app"}, dev_mode=False)
    app = keys.principal_for("k-1")
    assert app is not None and (app.user_id, app.role) == ("city-app", Role.INTEGRATION)
    assert keys.principal_for("k-2") is None and keys.principal_for(None) is None
    assert keys.principal_for(DEV_OPEN311_API_KEY) is None
    assert ApiKeys({}, dev_mode=True).principal_for(DEV_OPEN311_API_KEY) is not None
    # A city app files for any grid, and does nothing else.
    authorize(app, Action.REPORT, Scope("G0001", "D01", "S0101"))
    with pytest.raises(Exception, match="not a dispatcher"):
        authorize(app, Action.PAUSE, Scope("G0001", "D01", "S0101"))


def test_dispatchers_pause_in_their_area_only_and_outcomes_follow_the_status():
    home = Scope(None, "D01", "S0101", frozenset({"U-POL-P0001"}))
    authorize(who("desk-S0101-1"), Action.PAUSE, home)
    authorize(who("cmd-D01-1"), Action.RESUME, home)
    for user in ("desk-S0102-1", "cmd-D02-1", "P0001", "sup-1"):
        with pytest.raises(Exception, match="not a dispatcher"):
            authorize(who(user), Action.PAUSE, home)
    assert [outcome_of(s) for s in (200, 202, 401, 403, 422, 502)] == [
        "accepted", "accepted", "refused", "refused", "refused", "failed"
    ]


def test_the_cli_prints_a_token_the_services_accept(capsys, monkeypatch):
    monkeypatch.setenv("GW_AUTH_TOKEN_SECRET", SECRET)
    assert auth.main(["token", "W0001", "--ttl", "120"]) == 0
    out = capsys.readouterr()
    token = out.out.strip()
    assert "\n" not in token and "development secret" not in out.err
    assert TokenCodec(SECRET, ttl_seconds=3600).verify(token).grid_ids == {"G0001"}
    assert auth.main(["token", "nobody"]) == 2
    monkeypatch.delenv("GW_AUTH_TOKEN_SECRET")
    assert auth.main(["token", "admin"]) == 0
    assert "development secret" in capsys.readouterr().err
