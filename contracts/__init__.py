"""gridwhistle's typed, versioned event catalogue: the only thing the services share."""

from contracts import commands as commands  # noqa: F401  (registers the commands)
from contracts.envelope import (
    Envelope,
    Event,
    PoisonMessage,
    follow_up,
    header_map,
    make_envelope,
)
from contracts.events import CATALOGUE

__all__ = [
    "CATALOGUE",
    "Envelope",
    "Event",
    "PoisonMessage",
    "follow_up",
    "header_map",
    "make_envelope",
]
