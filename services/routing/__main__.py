"""Run the routing service: python -m services.routing."""

from services.routing.app import create_app
from services.routing.settings import RoutingSettings
from services.runtime.host import serve

settings = RoutingSettings()
serve(create_app(settings), settings)
