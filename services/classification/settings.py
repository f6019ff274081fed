"""Settings of the classification service (env prefix GW_CLASSIFICATION_)."""

from pydantic_settings import SettingsConfigDict

from services.runtime.settings import ServiceSettings


class ClassificationSettings(ServiceSettings):
    """Classification knobs; defaults run locally."""

    model_config = SettingsConfigDict(env_prefix="GW_CLASSIFICATION_")

    database_url: str = "sqlite+aiosqlite:///./.run/data/classification.db"
    http_port: int = 8001
    # Below this confidence a decision goes to the dispatchers' "needs review" queue.
    review_threshold: float = 0.6
