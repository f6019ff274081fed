"""Settings of the routing service (env prefix GW_ROUTING_)."""

from typing import Annotated

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from contracts.vocabulary import Urgency
from services.runtime.settings import ServiceSettings


class RoutingSettings(ServiceSettings):
    """Routing knobs; defaults run locally against the demo city and the default deadline policy."""

    model_config = SettingsConfigDict(env_prefix="GW_ROUTING_")

    database_url: str = "sqlite+aiosqlite:///./.run/data/routing.db"
    http_port: int = 8002
    # Path to a YAML/JSON reference data file or a directory of CSV files; None means the demo city.
    reference_data: str | None = None
    # Path to a deadline policy file; None means contracts.deadline_policy.DEFAULT_POLICY.
    deadline_policy: str | None = None
    # Declines before the command centre owns the incident (anti "kicking the ball", 踢皮球).
    max_bounces: int = Field(default=2, ge=1, le=10)
    # How many times a breach at the top of the escalation ladder dispatches it again.
    max_escalation_repeats: int = Field(default=3, ge=0, le=20)
    # Owner of last resort for grids nobody knows; None means the first district's command centre.
    default_command_centre_unit_id: str | None = None
    # Per urgency, the warning fraction at which an unreported handoff already goes to the station duty
    # desk (its breach then goes to the command centre); an urgency not listed escalates on breach only.
    # Env as JSON, e.g. GW_ROUTING_ESCALATE_ON_WARNING='{"urgent": 0.8, "general": 0.8}'.
    escalate_on_warning: dict[Urgency, Annotated[float, Field(gt=0, lt=1)]] = Field(default_factory=lambda: {Urgency.URGENT: 0.8})
