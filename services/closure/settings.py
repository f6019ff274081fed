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
    # Supervisors (督查) may verify any incident's outcome as well as its grid's workers: a caller
    # whose token says supervisor (the issuer's GW_AUTH_SUPERVISORS, services/runtime/auth.py).
    # Path of the reference data (grids and their grid workers); None means the demo city.
    reference_data: str | None = None
    # How often the KPI gauges on /metrics are recomputed from the facts.
    kpi_refresh_seconds: float = Field(default=30.0, gt=0)
    # The gauges cover the last this-many days (the API takes any [from, to)).
    kpi_gauge_window_days: int = Field(default=30, ge=1)
    # Offset of local time from UTC that decides the day of an instant (China: +8, no DST).
    kpi_utc_offset_hours: int = Field(default=8, ge=-12, le=14)
