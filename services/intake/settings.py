"""Settings of the intake service (env prefix GW_INTAKE_)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.runtime.settings import ServiceSettings


class IntakeSettings(ServiceSettings):
    """Intake knobs; defaults run locally."""

    model_config = SettingsConfigDict(env_prefix="GW_INTAKE_")

    database_url: str = "sqlite+aiosqlite:///./.run/data/intake.db"
    http_port: int = 8000
    # Path to a reference data file (YAML/JSON); None means the deterministic demo city.
    reference_data: str | None = None
    duplicate_radius_m: float = Field(default=200.0, ge=0)
    duplicate_window_minutes: float = Field(default=30.0, ge=0)
    duplicate_text_similarity: float = Field(default=0.6, gt=0, le=1)
    # Phones' clocks drift: an occurred_at this far in the future is still accepted.
    occurred_at_max_skew_seconds: float = Field(default=300.0, ge=0)
    # GeoReport v2 api_keys of the city apps allowed to file Open311 requests: key -> client id
    # (env as JSON, e.g. GW_INTAKE_OPEN311_API_KEYS='{"k3y...": "city-app"}'). In dev mode the
    # demo key `demo-open311-key` is added (services/runtime/auth.py).
    open311_api_keys: dict[str, str] = Field(default_factory=dict, repr=False)
