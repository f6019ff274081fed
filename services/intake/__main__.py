"""Run the intake service: python -m services.intake."""

from services.intake.app import create_app
from services.intake.settings import IntakeSettings
from services.runtime.host import serve

settings = IntakeSettings()
serve(create_app(settings), settings)
