"""Run the SLA timer service: python -m services.sla_timer."""

from services.runtime.host import serve
from services.sla_timer.app import create_app
from services.sla_timer.settings import SlaTimerSettings

settings = SlaTimerSettings()
serve(create_app(settings), settings)
