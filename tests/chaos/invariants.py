"""Offline invariant checker for a chaos run: the harness's operation history against every topic's events.

Pure: no I/O. `check(history, events, checked_at=...)` returns a `Verdict` listing each violation in words.
Duplicate copies of one event id are at-least-once delivery and allowed (counted); two *different* event
ids for the same logical fact are a duplicated side effect and a violation.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

# How late a due timer may fire and still count as "fired"; the scheduler polls, the relay batches.
TIMER_GRACE = timedelta(seconds=6)

# Marks the violation "a report deadline fired although its handoff was acknowledged before due".
BREACHED_THOUGH_REPORTED = "breached though handoff"

# How long after its report an incident may still be on its way through classification and routing
# when the topics are read; younger ones are not judged "stuck" yet.
PIPELINE_GRACE = timedelta(seconds=15)

# A handoff in one of these roles must be resolved (or withdrawn) before closure resolves the incident;
# escalation rungs never hold that back, though an open rung does hold the incident (its unit must act).
# A dispatch without a role counts as a lead.
COUNTING_ROLES = ("lead", "co_operating", None)

# The handoff facts that take a handoff out of the incident's readiness (no longer anyone's work).
WITHDRAWING_EVENTS = ("HandoffReleased", "HandoffDeclined", "HandoffReassigned")

# One logical fact per key: (event type) -> the data fields that name the fact.
FACT_KEYS: dict[str, tuple[str, ...]] = {
    "IncidentReported": ("incident_id",),
    "IncidentClassified": ("incident_id",),
    "HandoffDispatched": ("handoff_id",),
    "HandoffAcknowledged": ("handoff_id",),
    "HandoffResolved": ("handoff_id",),
    "DeadlineArmed": ("deadline_id",),
    "DeadlineBreached": ("deadline_id",),
    "DeadlineBreachWithdrawn": ("deadline_id",),
    "DeadlineCancelled": ("deadline_id",),
    "IncidentVerified": ("incident_id",),
    "FeedbackGiven": ("incident_id",),
    "IncidentClosed": ("incident_id",),
}

# A 2xx answer to this command promises this event about this field of the operation.
PROMISED_EVENT: dict[str, tuple[str, str]] = {
    "report": ("IncidentReported", "incident_id"),
    "acknowledge": ("HandoffAcknowledged", "handoff_id"),
    "resolve": ("HandoffResolved", "handoff_id"),
    "verify": ("IncidentVerified", "incident_id"),
    "feedback": ("FeedbackGiven", "incident_id"),
}


@dataclass(frozen=True)
class Event:
    """One record read back from a topic, reduced to what the invariants need."""

    id: str
    type: str
    subject: str
    data: Mapping[str, Any]


@dataclass(frozen=True)
class Operation:
    """One HTTP operation the harness did and what it got back (status None: no answer)."""

    op: str
    status: int | None
    incident_id: str | None = None
    handoff_id: str | None = None
    # When the harness got the answer (None in hand-made histories: then nothing is too young to judge).
    at: datetime | None = None

    @property
    def succeeded(self) -> bool:
        """True when the service answered 2xx."""
        return self.status is not None and 200 <= self.status < 300


@dataclass
class Verdict:
    """What the checker found: violations (must be empty) and at-least-once duplicate copies."""

    violations: list[str] = field(default_factory=list)
    duplicate_copies: int = 0
    events: int = 0
    incidents: int = 0
    # Breaches of in-time acknowledgements that reached the timer late, each withdrawn (not violations).
    withdrawn_breaches: int = 0
    # How the incidents ended: closed, or still open while someone legitimately has to act.
    closed_incidents: int = 0
    open_incidents: int = 0

    @property
    def ok(self) -> bool:
        """True when no invariant was violated."""
        return not self.violations


def event_from_envelope(envelope: Any) -> Event:
    """Reduce a contracts Envelope to an Event."""
    return Event(str(envelope.id), envelope.type, envelope.subject, envelope.data.model_dump())


def operation_from_record(record: Mapping[str, Any]) -> Operation:
    """Parse one history line (as written by the harness)."""
    at = record.get("at")
    return Operation(
        record["op"],
        record.get("status"),
        record.get("incident_id"),
        record.get("handoff_id"),
        datetime.fromisoformat(at) if isinstance(at, str) else at,
    )


def check(history: Iterable[Operation], events: Iterable[Event], *, checked_at: datetime) -> Verdict:
    """Check every invariant; `events` in topic order per incident (as read from offset zero)."""
    operations = list(history)
    copies = Counter(e.id for e in events)
    unique: list[Event] = []
    seen: set[str] = set()
    for event in events:
        if event.id not in seen:
            seen.add(event.id)
            unique.append(event)
    verdict = Verdict(duplicate_copies=sum(n - 1 for n in copies.values()), events=len(unique))
    facts = _facts(unique)
    verdict.incidents = len(facts["IncidentReported"])
    verdict.withdrawn_breaches = len(facts["DeadlineBreachWithdrawn"])
    verdict.violations += _duplicated_facts(facts)
    verdict.violations += _reports_become_incidents(operations, facts)
    verdict.violations += _acknowledged_commands_have_events(operations, facts)
    verdict.violations += _deadlines_fire_once_never_early(facts, checked_at)
    verdict.violations += _order_within_incident(unique)
    verdict.violations += _final_states_explained(operations, facts)
    ended, stuck = _incidents_end_closed_or_legitimately_open(operations, unique, checked_at)
    verdict.closed_incidents, verdict.open_incidents = ended["closed"], ended["open"]
    verdict.violations += stuck
    return verdict


def _facts(events: list[Event]) -> dict[str, dict[tuple, list[Event]]]:
    facts: dict[str, dict[tuple, list[Event]]] = defaultdict(lambda: defaultdict(list))
    for event in events:
        fields = FACT_KEYS.get(event.type)
        if fields:
            facts[event.type][tuple(event.data.get(f) for f in fields)].append(event)
    return facts


def _duplicated_facts(facts: Mapping[str, Mapping[tuple, list[Event]]]) -> list[str]:
    return [
        f"duplicate side effect: {len(found)} different {kind} events for {key[0]} ({', '.join(e.id for e in found)})"
        for kind, by_key in facts.items()
        for key, found in by_key.items()
        if len(found) > 1
    ]


def _reports_become_incidents(operations: list[Operation], facts: Mapping[str, Mapping[tuple, list]]) -> list[str]:
    accepted = {op.incident_id for op in operations if op.op == "report" and op.succeeded and op.incident_id}
    reported = {key[0] for key in facts["IncidentReported"]}
    return [f"incident {i} exists but no report of it was acknowledged (202)" for i in sorted(reported - accepted)]


def _acknowledged_commands_have_events(
    operations: list[Operation], facts: Mapping[str, Mapping[tuple, list]]
) -> list[str]:
    violations = []
    for op in operations:
        promise = PROMISED_EVENT.get(op.op)
        if promise is None or not op.succeeded:
            continue
        kind, attribute = promise
        target = getattr(op, attribute)
        if (target,) not in facts[kind]:
            violations.append(f"lost event: {op.op} of {target} answered {op.status} but no {kind} on the topic")
    return violations


def _deadlines_fire_once_never_early(
    facts: Mapping[str, Mapping[tuple, list[Event]]], checked_at: datetime
) -> list[str]:
    violations = []
    acknowledged_at = {key[0]: found[0].data["acknowledged_at"] for key, found in facts["HandoffAcknowledged"].items()}
    for (deadline_id,), armed in facts["DeadlineArmed"].items():
        due_at = armed[0].data["due_at"]
        breaches = facts["DeadlineBreached"].get((deadline_id,), [])
        cancelled = facts["DeadlineCancelled"].get((deadline_id,), [])
        for breach in breaches:
            if breach.data["fired_at"] < breach.data["due_at"]:
                violations.append(f"deadline {deadline_id} fired early: {breach.data['fired_at']} < due {due_at}")
        handoff_id = armed[0].data.get("handoff_id")
        acked = acknowledged_at.get(handoff_id)
        reported_in_time = armed[0].data.get("kind") in ("report", "REPORT") and acked is not None and acked < due_at
        withdrawn = facts["DeadlineBreachWithdrawn"].get((deadline_id,), [])
        # An acknowledgement that waited in routing's outbox (a crash, an outage) reaches the timer
        # after the breach: the breach must then be withdrawn, and only then.
        if breaches and reported_in_time and not withdrawn:
            violations.append(f"deadline {deadline_id} {BREACHED_THOUGH_REPORTED} {handoff_id} reported at {acked}")
        if withdrawn and not (breaches and reported_in_time):
            violations.append(f"deadline {deadline_id}: breach withdrawn though it was not breached or not reported in time")
        if not breaches and not cancelled and due_at + TIMER_GRACE < checked_at:
            violations.append(f"deadline {deadline_id} due {due_at} neither fired nor cancelled by {checked_at}")
    for kind in ("DeadlineBreached", "DeadlineBreachWithdrawn", "DeadlineCancelled"):
        for (deadline_id,) in facts[kind]:
            if (deadline_id,) not in facts["DeadlineArmed"]:
                violations.append(f"{kind} for deadline {deadline_id} that was never armed")
    return violations


# (earlier, later, field): `later` of a key must never come before `earlier` of the same key.
ORDER_RULES = (
    ("HandoffDispatched", "HandoffAcknowledged", "handoff_id"),
    ("HandoffAcknowledged", "HandoffResolved", "handoff_id"),
    ("DeadlineArmed", "DeadlineCancelled", "deadline_id"),
    ("DeadlineArmed", "DeadlineBreached", "deadline_id"),
    ("DeadlineBreached", "DeadlineBreachWithdrawn", "deadline_id"),
    ("IncidentVerified", "IncidentClosed", "incident_id"),
)


def _order_within_incident(events: list[Event]) -> list[str]:
    violations = []
    # Keyed by the field too: a handoff rule must compare handoffs, never the incident's first events.
    first_at: dict[tuple[str, str, Any], int] = {}
    for position, event in enumerate(events):
        for field_name in ("handoff_id", "deadline_id", "incident_id"):
            if field_name in event.data:
                first_at.setdefault((event.type, field_name, event.data[field_name]), position)
    for earlier, later, field_name in ORDER_RULES:
        for (kind, keyed_by, key), position in first_at.items():
            if kind != later or keyed_by != field_name:
                continue
            before = first_at.get((earlier, field_name, key))
            if before is None or before > position:
                violations.append(f"out of order: {later} of {field_name} {key} without an earlier {earlier}")
    return violations


def _final_states_explained(operations: list[Operation], facts: Mapping[str, Mapping[tuple, list]]) -> list[str]:
    fed_back = {op.incident_id for op in operations if op.op == "feedback" and op.succeeded}
    closed = {key[0] for key in facts["IncidentClosed"]}
    reported = {key[0] for key in facts["IncidentReported"]}
    violations = [f"incident {i} got feedback (2xx) but never closed" for i in sorted(fed_back - closed)]
    violations += [f"incident {i} closed though the harness never gave feedback" for i in sorted(closed - fed_back)]
    violations += [f"incident {i} closed but was never reported" for i in sorted(closed - reported)]
    return violations


def _incidents_end_closed_or_legitimately_open(
    operations: list[Operation], events: list[Event], checked_at: datetime
) -> tuple[Counter[str], list[str]]:
    """Every incident ends closed, or open with someone who has to act next.

    Open is legitimate only while a human holds it: a summoned unit (lead or co-operating) that has
    neither resolved nor been withdrawn, the grid worker verifying a resolved incident, or the
    reporter giving feedback on a verified one. What the system does on its own (classify and
    dispatch, resolve once every unit resolved) must have happened; an incident nobody holds is stuck.
    """
    reported_at = {op.incident_id: op.at for op in operations if op.op == "report" and op.succeeded and op.incident_id}
    by_incident: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        incident_id = event.data.get("incident_id", event.subject)
        by_incident[incident_id].append(event)
    ended: Counter[str] = Counter()
    violations = []
    for incident_id, incident_events in by_incident.items():
        kinds = {e.type for e in incident_events}
        if "IncidentReported" not in kinds:
            continue  # judged by _reports_become_incidents / _final_states_explained
        if "IncidentClosed" in kinds:
            ended["closed"] += 1
            continue
        ended["open"] += 1
        at = reported_at.get(incident_id)
        if at is not None and checked_at - at < PIPELINE_GRACE:
            continue  # may still be on its way through classification and routing
        if "HandoffDispatched" not in kinds:
            stage = "classified but never dispatched" if "IncidentClassified" in kinds else "never classified"
            violations.append(f"incident {incident_id} stuck: {stage}, and not closed")
            continue
        if "IncidentReopened" in kinds:
            continue  # a new round: routing dispatched the lead again (checked as a dispatch above)
        if "IncidentVerified" in kinds or "IncidentResolved" in kinds:
            continue  # waiting for the reporter's feedback, or for the grid worker to verify
        held, lead_done = _handoffs_still_held(incident_events)
        if lead_done:
            violations.append(
                f"incident {incident_id} stuck: its lead and every co-operating unit resolved, "
                "but it was never resolved (IncidentResolved)"
            )
        elif not held:
            violations.append(f"incident {incident_id} stuck: every handoff was withdrawn or resolved and no unit holds it")
    return ended, violations


def _handoffs_still_held(events: list[Event]) -> tuple[set[str], bool]:
    """The handoffs of one incident still held by their unit (any role, an escalation rung too), and
    whether closure has all it needs: a lead still counting, it and every counting co-operating unit resolved."""
    roles: dict[str, Any] = {}
    withdrawn: set[str] = set()
    resolved: set[str] = set()
    for event in events:
        handoff_id = event.data.get("handoff_id")
        if event.type == "HandoffDispatched":
            roles[handoff_id] = event.data.get("role")
            # An escalation rung chases the breached handoff it names; that unit still holds the
            # incident (closure's rule too). A reassignment or re-dispatch does replace it.
            if event.data.get("replaces_handoff_id") and event.data.get("role") != "escalation":
                withdrawn.add(event.data["replaces_handoff_id"])
        elif event.type in WITHDRAWING_EVENTS:
            withdrawn.add(handoff_id)
        elif event.type == "HandoffResolved":
            resolved.add(handoff_id)
    active = set(roles) - withdrawn
    counting = {h for h in active if roles[h] in COUNTING_ROLES}
    has_lead = any(roles[h] in ("lead", None) for h in counting)
    return active - resolved, has_lead and counting <= resolved


@dataclass
class OutageTimers:
    """What became of the deadlines that came due while a dependency was down."""

    due: int = 0
    fired_after: int = 0
    cancelled: int = 0
    withdrawn: int = 0
    violations: list[str] = field(default_factory=list)


def timers_due_during_outage(events: Iterable[Event], down_at: datetime, up_at: datetime) -> OutageTimers:
    """Each deadline due in [down_at, up_at] fired exactly once after `up_at`, never before, or was cancelled.

    While the broker is down the timer cannot know whether an acknowledgement is waiting in another
    service's outbox, so it must not judge a deadline then: a breach stamped before `up_at` fired on
    a view it could not have had. A deadline neither fired nor cancelled is lost.
    """
    unique = list({e.id: e for e in events}.values())
    facts = _facts(unique)
    result = OutageTimers()
    for (deadline_id,), armed in facts["DeadlineArmed"].items():
        due_at = armed[0].data["due_at"]
        if not down_at <= due_at <= up_at:
            continue
        result.due += 1
        breaches = facts["DeadlineBreached"].get((deadline_id,), [])
        cancels = facts["DeadlineCancelled"].get((deadline_id,), [])
        if len(breaches) > 1 or len(cancels) > 1:
            result.violations.append(
                f"deadline {deadline_id} due during the outage: {len(breaches)} breaches, {len(cancels)} cancellations"
            )
        if breaches and cancels:
            result.violations.append(f"deadline {deadline_id} due during the outage both breached and cancelled")
        if not breaches and not cancels:
            result.violations.append(f"deadline {deadline_id} due {due_at} during the outage neither fired nor cancelled")
        for breach in breaches:
            fired_at = breach.data["fired_at"]
            if fired_at < up_at:
                result.violations.append(
                    f"deadline {deadline_id} due during the outage fired at {fired_at}, before the broker was back at {up_at}"
                )
            else:
                result.fired_after += 1
        result.cancelled += bool(cancels)
        result.withdrawn += bool(facts["DeadlineBreachWithdrawn"].get((deadline_id,)))
    return result
