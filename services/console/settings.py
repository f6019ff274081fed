"""Settings of the console gateway (env prefix GW_CONSOLE_)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.runtime.settings import ServiceSettings


class ConsoleSettings(ServiceSettings):
    """Console knobs; defaults run locally beside the other services on 8000..8004."""

    model_config = SettingsConfigDict(env_prefix="GW_CONSOLE_")

    database_url: str = "sqlite+aiosqlite:///./.run/data/console.db"
    http_port: int = 8080
    reference_data: str | None = None
    intake_url: str = "http://127.0.0.1:8000"
    classification_url: str = "http://127.0.0.1:8001"
    routing_url: str = "http://127.0.0.1:8002"
    sla_timer_url: str = "http://127.0.0.1:8003"
    closure_url: str = "http://127.0.0.1:8004"
    upstream_timeout_seconds: float = Field(default=10.0, gt=0)
    # Sign-in issues the shared access tokens (GW_AUTH_TOKEN_SECRET, GW_AUTH_TOKEN_TTL_SECONDS,
    # GW_AUTH_SUPERVISORS, GW_AUTH_ADMINS: services/runtime/settings.py) as a cookie and a Bearer token.
    cookie_secure: bool = False
    # The demo city has users but no passwords; in development every demo user shares this one.
    demo_password: str | None = "gridwhistle"
    # How long a live stream waits for a change-log wake-up before looking at the table anyway
    # (another console process may have written it) and sending a keep-alive.
    stream_poll_seconds: float = Field(default=1.0, gt=0)
    stream_keepalive_seconds: float = Field(default=15.0, gt=0)
