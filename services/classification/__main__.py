"""Run the classification service: python -m services.classification."""

from services.classification.app import create_app
from services.classification.settings import ClassificationSettings
from services.runtime.host import serve

settings = ClassificationSettings()
serve(create_app(settings), settings)
