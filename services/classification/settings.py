"""Settings of the classification service (env prefix GW_CLASSIFICATION_)."""

from pathlib import Path

from pydantic_settings import SettingsConfigDict

from services.classification.model import CORPUS_PATH, TAXONOMY_PATH

from services.runtime.settings import ServiceSettings


class ClassificationSettings(ServiceSettings):
    """Classification knobs; defaults run locally."""

    model_config = SettingsConfigDict(env_prefix="GW_CLASSIFICATION_")

    database_url: str = "sqlite+aiosqlite:///./.run/data/classification.db"
    http_port: int = 8001
    # Below this confidence a decision goes to the dispatchers' "needs review" queue.
    review_threshold: float = 0.6
    # Versioned classification standard and the labelled corpus the model is refitted from.
    taxonomy_path: Path = TAXONOMY_PATH
    corpus_path: Path = CORPUS_PATH
