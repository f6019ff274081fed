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
    # Sign-in: tokens are HMAC-signed with this secret and expire; override it outside a laptop.
    token_secret: str = "dev-only-console-secret-change-me"
    token_max_age_seconds: int = Field(default=12 * 3600, ge=60)
    cookie_secure: bool = False
    # The demo city has users but no passwords; in development every demo user shares this one.
    demo_password: str | None = "gridwhistle"
    supervisors: tuple[str, ...] = ("sup-1",)
    admins: tuple[str, ...] = ("admin",)
    # How long a live stream waits for a change-log wake-up before looking at the table anyway
    # (another console process may have written it) and sending a keep-alive.
    stream_poll_seconds: float = Field(default=1.0, gt=0)
    stream_keepalive_seconds: float = Field(default=15.0, gt=0)
