"""Run the console gateway: python -m services.console."""

from services.console.app import create_app
from services.console.settings import ConsoleSettings
from services.runtime.host import serve

settings = ConsoleSettings()
serve(create_app(settings), settings)
