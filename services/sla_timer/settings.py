"""Settings of the SLA timer service (env prefix GW_SLA_TIMER_)."""

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.runtime.settings import ServiceSettings


class SlaTimerSettings(ServiceSettings):
    """SLA timer knobs; defaults run locally."""

    model_config = SettingsConfigDict(env_prefix="GW_SLA_TIMER_")

    database_url: str = "sqlite+aiosqlite:///./.run/data/sla_timer.db"
    http_port: int = 8003
    # Path of a deadline policy YAML/JSON; None means contracts.deadline_policy.DEFAULT_POLICY.
    deadline_policy: str | None = None
    # Path of the reference data (units and their members); None means the demo city.
    reference_data: str | None = None
    # The scheduler re-checks at least this often even when nothing is due sooner.
    scheduler_max_sleep_seconds: float = Field(default=0.5, gt=0)
    # Deadlines fired per transaction; a backlog is drained batch after batch.
    fire_batch_size: int = Field(default=500, ge=1)
    warnings_enabled: bool = True
    # Off only in tests that drive fire_due() by hand with a FakeClock.
    scheduler_enabled: bool = True
    # Counting open deadlines is a scan of an index; do it this often, not every round.
    pending_gauge_refresh_seconds: float = Field(default=15.0, gt=0)
    # Fire a deadline only once the partition its awaited fact arrives on has been consumed up to
    # its due instant (off only on the in-memory test broker, where a publish runs the handler).
    wait_for_consumed_view: bool = True
    # After a broker outage, wait this long for other services' outboxes before trusting the view.
    view_settle_seconds: float = Field(default=3.0, ge=0)
    # A consumer this long behind the log (while the broker answers) no longer holds deadlines back.
    view_hold_max_seconds: float = Field(default=30.0, gt=0)
