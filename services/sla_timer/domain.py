"""Pure deadline rules: the chain of clocks, deterministic ids, warning instants, pause arithmetic.

No I/O here. A deadline runs over a window (its length in running time); `due_at` is where the
window ends on the wall clock. Pausing stores the running time left; resuming puts the end of
the window that far after the resume instant. Warning instants are measured back from `due_at`
by the unrun part of the window, so they stay correct across any number of pauses.

A deadline is due when `now >= due_at`: an acknowledgement stamped exactly at `due_at` is late.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from contracts.vocabulary import DeadlineKind

DEADLINE_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "gridwhistle:sla_timer:deadline")

# The clocks armed when the awaited fact of a clock arrives: the acknowledgement (报到) starts the
# on-scene and the resolution clocks together. Kinds not listed end the handoff's chain here; the
# incident's VERIFICATION clock is armed by closure's IncidentResolved, not by a handoff.
NEXT_CLOCKS: dict[DeadlineKind, tuple[DeadlineKind, ...]] = {
    DeadlineKind.REPORT: (DeadlineKind.ON_SCENE, DeadlineKind.RESOLUTION),
}


class DeadlineState(StrEnum):
    """Life of one deadline: armed until it fires or is cancelled; paused stops its clock."""

    ARMED = "armed"
    PAUSED = "paused"
    FIRED = "fired"
    CANCELLED = "cancelled"
    # Fired, then its awaited fact turned up stamped before due: the breach was withdrawn.
    WITHDRAWN = "withdrawn"


OPEN_STATES = (DeadlineState.ARMED, DeadlineState.PAUSED)


def deadline_id(owner_id: str, kind: DeadlineKind, generation: int = 0) -> str:
    """The deadline's id, the same on every redelivery of the event that arms it.

    `owner_id` is the handoff id for handoff clocks and the incident id for VERIFICATION;
    `generation` is the incident's reopen count for VERIFICATION (a reopen starts a new chain).
    """
    return str(uuid.uuid5(DEADLINE_NAMESPACE, f"{owner_id}:{kind.value}:{generation}"))


def verification_deadline_id(incident_id: str, generation: int) -> str:
    """The id of an incident's verification clock in one chain generation (0, then one per reopen)."""
    return deadline_id(incident_id, DeadlineKind.VERIFICATION, generation)


class Settlement(StrEnum):
    """What the awaited fact of a clock (ack, arrival, verification) does to its deadline row."""

    CANCEL = "cancel"  # armed and not yet due at the fact's own timestamp, or paused
    BREACH_THEN_LATE = "breach_then_late"  # still armed but due by the fact's timestamp: fire, then record late
    LATE = "late"  # already fired: record the fact as late
    WITHDRAW = "withdraw"  # already fired, but the fact is stamped before due: the breach was wrong
    NOTHING = "nothing"  # cancelled before (declined, released, closed) or already settled


def settle(state: str, due_at: datetime, fact_at: datetime) -> Settlement:
    """Decide what an awaited fact stamped `fact_at` does to a deadline in `state`."""
    if state == DeadlineState.ARMED:
        return Settlement.BREACH_THEN_LATE if is_due(due_at, fact_at) else Settlement.CANCEL
    if state == DeadlineState.PAUSED:
        return Settlement.CANCEL
    if state == DeadlineState.FIRED:
        # Stamped before due yet consumed after the firing: it waited somewhere (its producer's
        # outbox through a crash or a broker outage) where no consumed view could have seen it.
        return Settlement.LATE if is_due(due_at, fact_at) else Settlement.WITHDRAW
    return Settlement.NOTHING


def signal_event_id(deadline: str, signal: str) -> uuid.UUID:
    """Event id of a once-only signal of a deadline (armed, breached, warned:0.5)."""
    return uuid.uuid5(DEADLINE_NAMESPACE, f"{deadline}:{signal}")


def is_due(due_at: datetime, now: datetime) -> bool:
    """True from the due instant on: never early."""
    return now >= due_at


def next_warning(
    due_at: datetime, window_seconds: float, fractions: Iterable[float], handled_up_to: float
) -> tuple[float, datetime] | None:
    """The first warning after fraction `handled_up_to`, with its instant; None when none is left."""
    for fraction in sorted(f for f in fractions if 0 < f < 1):
        if fraction > handled_up_to:
            return fraction, warning_instant(due_at, window_seconds, fraction)
    return None


def warning_instant(due_at: datetime, window_seconds: float, fraction: float) -> datetime:
    """The instant at which `fraction` of the window has run."""
    return due_at - timedelta(seconds=window_seconds * (1 - fraction))


def next_fire_at(due_at: datetime, warning_at: datetime | None) -> datetime:
    """When the scheduler must next look at an armed deadline: its next warning or its due instant."""
    return min(due_at, warning_at) if warning_at is not None else due_at


@dataclass(frozen=True)
class Firing:
    """What the scheduler does to one armed deadline at `now`."""

    breach: bool
    warning_fraction: float | None
    next_warning_at: datetime | None
    handled_up_to: float


def plan_firing(
    due_at: datetime,
    window_seconds: float,
    fractions: Iterable[float],
    handled_up_to: float,
    now: datetime,
) -> Firing:
    """Decide between a breach, one warning, or nothing for an armed deadline at `now`."""
    fractions = tuple(fractions)
    if is_due(due_at, now):
        # A breach says more than any warning that is also overdue; warning after it is noise.
        return Firing(True, None, None, handled_up_to)
    warned: float | None = None
    upcoming = next_warning(due_at, window_seconds, fractions, handled_up_to)
    # When several warnings are overdue at once (a backlog), only the latest one is worth sending.
    while upcoming is not None and upcoming[1] <= now:
        warned = upcoming[0]
        upcoming = next_warning(due_at, window_seconds, fractions, warned)
    return Firing(
        breach=False,
        warning_fraction=warned,
        next_warning_at=upcoming[1] if upcoming else None,
        handled_up_to=warned if warned is not None else handled_up_to,
    )


def remaining_seconds_at(due_at: datetime, paused_at: datetime) -> float:
    """Running time left when the clock is paused at `paused_at` (before it is due)."""
    return (due_at - paused_at).total_seconds()


def resumed_due_at(remaining_seconds: float, resumed_at: datetime) -> datetime:
    """The new due instant: the time that was left, counted from the resume."""
    return resumed_at + timedelta(seconds=remaining_seconds)


class PauseRefused(Exception):
    """A pause the rules do not allow; `code` is a stable machine-readable reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def check_pause(state: str, due_at: datetime, now: datetime, actor_id: str, assignee_members: Iterable[str]) -> None:
    """Raise PauseRefused unless `actor_id` may stop this deadline's clock at `now`."""
    if actor_id in set(assignee_members):
        raise PauseRefused("assignee_cannot_pause", "a member of the summoned unit cannot pause its own clock")
    if state != DeadlineState.ARMED:
        raise PauseRefused("not_armed", f"only an armed deadline can be paused (it is {state})")
    if is_due(due_at, now):
        raise PauseRefused("already_due", "the deadline is already due; it is being breached")
