"""Run the closure service: python -m services.closure."""

from services.closure.app import create_app
from services.closure.settings import ClosureSettings
from services.runtime.host import serve

settings = ClosureSettings()
serve(create_app(settings), settings)
