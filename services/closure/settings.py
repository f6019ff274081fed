"""Settings of the closure service (env prefix GW_CLOSURE_)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.runtime.settings import ServiceSettings


class ClosureSettings(ServiceSettings):
    """Closure knobs; defaults run locally."""

    model_config = SettingsConfigDict(env_prefix="GW_CLOSURE_")

    database_url: str = "sqlite+aiosqlite:///./.run/data/closure.db"
    http_port: int = 8004
    # Reopens allowed before a refused outcome closes as closed_unresolved for the command centre.
    max_reopens: int = Field(default=2, ge=0)
    # Path of the reference data (grids and their grid workers); None means the demo city.
    reference_data: str | None = None
