"""Pure closure rules: readiness, verification, feedback, reopening, and the timeline's hash chain.

Facts arrive from three topics in no guaranteed order across them, so the state keeps facts
(per handoff: role, resolution, whether it still counts) and derives readiness from them after
every fact instead of trusting arrival order. No I/O and no framework here: the payload models
of `contracts` are plain data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from contracts.commands import GiveFeedback, VerifyIncident
from contracts.envelope import Event
from contracts.events import (
    FeedbackGiven,
    HandoffDeclined,
    HandoffDispatched,
    HandoffReassigned,
    HandoffReleased,
    HandoffResolved,
    IncidentClassified,
    IncidentClosed,
    IncidentEscalatedToCommandCentre,
    IncidentReclassified,
    IncidentReopened,
    IncidentReported,
    IncidentResolved,
    IncidentVerified,
    VerificationRejected,
)
from contracts.vocabulary import Category, ClosureOutcome, Disposition, HandoffRole, Satisfaction, Urgency


class ClosureStatus(StrEnum):
    """Where an incident stands in the feedback loop (反馈 → 限时办结)."""

    OPEN = "open"
    AWAITING_VERIFICATION = "awaiting_verification"
    AWAITING_FEEDBACK = "awaiting_feedback"
    REOPENED = "reopened"
    # The reopen cap is spent and the district command centre has taken the lead (兜底).
    ESCALATED = "escalated"
    CLOSED = "closed"


class Withdrawal(StrEnum):
    """Why a handoff no longer counts towards readiness."""

    RELEASED = "released"
    DECLINED = "declined"
    REASSIGNED = "reassigned"
    REPLACED = "replaced"


class ClosureRefused(Exception):
    """A command that cannot be applied; subclasses say why."""


class ActorNotPermitted(ClosureRefused):
    """The actor is not one who may act: the reporter, a grid worker of the grid (or, to verify, a supervisor)."""


class WrongClosureState(ClosureRefused):
    """The command does not fit the incident's current status."""


class InvalidClosureCommand(ClosureRefused):
    """The command is malformed for its intent (e.g. a rejection without a reason)."""


@dataclass
class HandoffRecord:
    """What closure knows about one handoff; any field may still be unknown (facts arrive out of order)."""

    handoff_id: str
    role: HandoffRole | None = None
    unit_id: str | None = None
    department: str | None = None
    dispatched_at: datetime | None = None
    # Order in which closure first heard of the handoff; the newest counting lead is the current one.
    seen_order: int = 0
    disposition: Disposition | None = None
    resolved_at: datetime | None = None
    # The round the resolution arrived in (see IncidentClosure.round): a reopened or escalated
    # incident needs a lead resolution of the new round, never one already refused.
    resolved_round: int | None = None
    withdrawal: Withdrawal | None = None

    @property
    def counts(self) -> bool:
        """True while the handoff takes part in readiness."""
        return self.withdrawal is None

    @property
    def state(self) -> str:
        """A display state: the withdrawal reason, resolved, or active."""
        if self.withdrawal is not None:
            return self.withdrawal.value
        return "resolved" if self.disposition is not None else "active"


@dataclass
class IncidentClosure:
    """The closure aggregate of one incident: facts about it and where its loop stands."""

    incident_id: str
    grid_id: str | None = None
    reporter_id: str | None = None
    category: Category | None = None
    urgency: Urgency | None = None
    status: ClosureStatus = ClosureStatus.OPEN
    reopen_count: int = 0
    disposition: Disposition | None = None
    resolved_at: datetime | None = None
    verified_by: str | None = None
    verified_at: datetime | None = None
    outcome: ClosureOutcome | None = None
    satisfaction: Satisfaction | None = None
    # True once the reopen cap was spent and the incident went to the district command centre.
    escalated: bool = False
    closed_at: datetime | None = None
    # Fingerprint of the last command applied, so a repeated identical call has no second effect.
    last_command: str | None = None
    handoffs_seen: int = 0
    handoffs: dict[str, HandoffRecord] = field(default_factory=dict)

    @property
    def round(self) -> int:
        """The handling round: one per reopen, and one more once the command centre took over."""
        return self.reopen_count + int(self.escalated)

    def apply(self, event: Event) -> list[Event]:
        """Record one consumed fact; return the events it caused (IncidentResolved at most)."""
        if isinstance(event, IncidentReported):
            self.grid_id, self.reporter_id = event.grid_id, event.reporter_id
        elif isinstance(event, IncidentClassified | IncidentReclassified):
            self.grid_id = self.grid_id or event.grid_id
            self.category, self.urgency = event.category, event.urgency
        elif isinstance(event, HandoffDispatched):
            self._record_dispatch(event)
        elif isinstance(event, HandoffResolved):
            handoff = self._handoff(event.handoff_id)
            handoff.role = handoff.role or event.role
            handoff.unit_id = handoff.unit_id or event.unit_id
            handoff.disposition, handoff.resolved_at = event.disposition, event.resolved_at
            handoff.resolved_round = self.round
        elif isinstance(event, HandoffReleased):
            self._withdraw(event.handoff_id, Withdrawal.RELEASED)
        elif isinstance(event, HandoffDeclined):
            self._withdraw(event.handoff_id, Withdrawal.DECLINED)
        elif isinstance(event, HandoffReassigned):
            self._withdraw(event.handoff_id, Withdrawal.REASSIGNED)
        return self._settle()

    def _record_dispatch(self, event: HandoffDispatched) -> None:
        handoff = self._handoff(event.handoff_id)
        handoff.role, handoff.unit_id, handoff.department = event.role, event.unit_id, event.department
        handoff.dispatched_at = event.dispatched_at
        self.grid_id = self.grid_id or event.grid_id
        # An escalation rung names the breached handoff it chases (routing's chain link) but never
        # takes its place (首接负责): the breached unit still leads, and its resolution still counts.
        if event.replaces_handoff_id and event.role is not HandoffRole.ESCALATION:
            self._withdraw(event.replaces_handoff_id, Withdrawal.REPLACED)

    def _handoff(self, handoff_id: str) -> HandoffRecord:
        if handoff_id not in self.handoffs:
            self.handoffs_seen += 1
            self.handoffs[handoff_id] = HandoffRecord(handoff_id, seen_order=self.handoffs_seen)
        return self.handoffs[handoff_id]

    def _withdraw(self, handoff_id: str, why: Withdrawal) -> None:
        handoff = self._handoff(handoff_id)
        # The first reason sticks: a declined handoff later named as "replaced" was still declined.
        handoff.withdrawal = handoff.withdrawal or why

    def current_lead(self) -> HandoffRecord | None:
        """The newest lead handoff that still counts, or None."""
        leads = [h for h in self.handoffs.values() if h.role is HandoffRole.LEAD and h.counts]
        return max(leads, key=lambda h: h.seen_order, default=None)

    def is_ready_for_verification(self) -> bool:
        """True when the current lead resolved in this round and every counting co-operating handoff resolved."""
        lead = self.current_lead()
        if lead is None or lead.disposition is None or lead.resolved_round != self.round:
            return False
        # Released/declined/reassigned co-ops no longer count; escalation handoffs never block.
        co_operating = [h for h in self.handoffs.values() if h.role is HandoffRole.CO_OPERATING and h.counts]
        return all(h.disposition is not None for h in co_operating)

    def _settle(self) -> list[Event]:
        handling = (ClosureStatus.OPEN, ClosureStatus.REOPENED, ClosureStatus.ESCALATED)
        if self.status not in handling or not self.is_ready_for_verification():
            return []
        lead = self.current_lead()
        assert lead is not None and lead.disposition is not None and lead.resolved_at is not None
        finished = [lead.resolved_at] + [
            h.resolved_at
            for h in self.handoffs.values()
            if h.role is HandoffRole.CO_OPERATING and h.counts and h.resolved_at is not None
        ]
        self.status = ClosureStatus.AWAITING_VERIFICATION
        self.disposition = lead.disposition
        self.resolved_at = max(finished)
        return [IncidentResolved(incident_id=self.incident_id, disposition=self.disposition, resolved_at=self.resolved_at)]

    def may_act(self, actor_id: str, grid_worker_ids: Iterable[str]) -> bool:
        """True for the reporter and the grid workers of the incident's grid."""
        return actor_id == self.reporter_id or actor_id in set(grid_worker_ids)

    def verify(
        self,
        command: VerifyIncident,
        *,
        grid_worker_ids: Iterable[str],
        now: datetime,
        max_reopens: int,
        supervisor_ids: Iterable[str] = (),
    ) -> list[Event]:
        """Confirm or reject the outcome (核查); a repeat of the last command has no effect.

        The grid's worker, the reporter or a supervisor may verify (a supervisor checks on site
        when the grid worker cannot); feedback stays with the reporter and the grid's workers.
        """
        fingerprint = _fingerprint(command)
        if command.actor_id not in set(supervisor_ids):
            self._check_actor(command.actor_id, grid_worker_ids)
        if not command.confirmed and not command.reason.strip():
            raise InvalidClosureCommand("a rejected verification needs a reason")
        if self.status is not ClosureStatus.AWAITING_VERIFICATION:
            if fingerprint == self.last_command:
                return []
            raise WrongClosureState(f"incident is {self.status.value}; verification needs awaiting_verification")
        self.last_command = fingerprint
        if command.confirmed:
            self.status, self.verified_by, self.verified_at = ClosureStatus.AWAITING_FEEDBACK, command.actor_id, now
            return [IncidentVerified(incident_id=self.incident_id, actor_id=command.actor_id, verified_at=now)]
        rejected = VerificationRejected(
            incident_id=self.incident_id, actor_id=command.actor_id, reason=command.reason, rejected_at=now
        )
        return [rejected, *self._reopen_or_give_up(f"verification rejected: {command.reason}", now, max_reopens, None)]

    def give_feedback(
        self, command: GiveFeedback, *, grid_worker_ids: Iterable[str], now: datetime, max_reopens: int
    ) -> list[Event]:
        """Record the reporter's satisfaction (回访) and close or reopen; a repeat has no effect."""
        fingerprint = _fingerprint(command)
        self._check_actor(command.actor_id, grid_worker_ids)
        if self.status is not ClosureStatus.AWAITING_FEEDBACK:
            if fingerprint == self.last_command:
                return []
            if self.status is ClosureStatus.AWAITING_VERIFICATION:
                raise WrongClosureState("the outcome must be verified (核查) before feedback is given")
            raise WrongClosureState(f"incident is {self.status.value}; feedback needs awaiting_feedback")
        self.last_command = fingerprint
        self.satisfaction = command.satisfaction
        feedback = FeedbackGiven(
            incident_id=self.incident_id,
            actor_id=command.actor_id,
            satisfaction=command.satisfaction,
            comment=command.comment,
            given_at=now,
        )
        if command.satisfaction is Satisfaction.NOT_SATISFIED:
            return [feedback, *self._reopen_or_give_up("reporter not satisfied", now, max_reopens, command.satisfaction)]
        assert self.disposition is not None
        return [feedback, self._close(outcome_for(self.disposition), command.satisfaction, now)]

    def _check_actor(self, actor_id: str, grid_worker_ids: Iterable[str]) -> None:
        if not self.may_act(actor_id, grid_worker_ids):
            raise ActorNotPermitted(f"{actor_id} is neither the reporter nor a grid worker of this incident's grid")

    def _reopen_or_give_up(
        self, reason: str, now: datetime, max_reopens: int, satisfaction: Satisfaction | None
    ) -> list[Event]:
        if self.escalated:
            # The command centre, the owner of last resort, had its round too: close honestly as
            # unresolved rather than going round forever.
            return [self._close(ClosureOutcome.CLOSED_UNRESOLVED, satisfaction, now)]
        if self.reopen_count >= max_reopens:
            # The loop has gone round as often as policy allows: the district command centre takes
            # the incident over (routing dispatches it as the lead) for one last round.
            self.escalated = True
            self.status = ClosureStatus.ESCALATED
            self.verified_by = self.verified_at = None
            return [
                IncidentEscalatedToCommandCentre(
                    incident_id=self.incident_id,
                    grid_id=self.grid_id or "",
                    reopen_count=self.reopen_count,
                    reason=reason[:500],
                    escalated_at=now,
                )
            ]
        self.reopen_count += 1
        self.status = ClosureStatus.REOPENED
        self.verified_by = self.verified_at = None
        return [
            IncidentReopened(
                incident_id=self.incident_id, reason=reason[:500], reopen_count=self.reopen_count, reopened_at=now
            )
        ]

    def _close(self, outcome: ClosureOutcome, satisfaction: Satisfaction | None, now: datetime) -> IncidentClosed:
        self.status, self.outcome, self.closed_at = ClosureStatus.CLOSED, outcome, now
        return IncidentClosed(incident_id=self.incident_id, outcome=outcome, satisfaction=satisfaction, closed_at=now)


def outcome_for(disposition: Disposition) -> ClosureOutcome:
    """The honest closure outcome of a lead disposition: only RESOLVED counts as resolved."""
    if disposition is Disposition.RESOLVED:
        return ClosureOutcome.RESOLVED
    if disposition is Disposition.DUPLICATE:
        return ClosureOutcome.DUPLICATE
    return ClosureOutcome.CLOSED_UNRESOLVED


def _fingerprint(command: VerifyIncident | GiveFeedback) -> str:
    return command.event_type + ":" + json.dumps(command.model_dump(mode="json"), sort_keys=True, ensure_ascii=False)


# --- timeline hash chain ---------------------------------------------------------------------

GENESIS_HASH = "0" * 64

# Free text and personal data stay in the owning services; the timeline keeps the facts.
_LEFT_OUT_OF_SUMMARY = frozenset(
    {"incident_id", "description", "location", "media", "note", "comment", "reason_text"}
)


@dataclass(frozen=True)
class TimelineEntry:
    """One append-only row of an incident's timeline."""

    incident_id: str
    seq: int
    at: datetime
    event_type: str
    event_id: str
    summary: dict[str, Any]
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class ChainHead:
    """The anchor of an incident's chain: how long it is and the hash of its newest entry.

    A chain alone proves that no entry was edited, inserted or removed in the middle; it cannot
    show that its newest entries were cut off. The head, written in the same transaction as every
    append, can.
    """

    incident_id: str
    length: int
    hash: str


@dataclass(frozen=True)
class BrokenLink:
    """The first timeline entry whose chain does not verify, and why."""

    incident_id: str
    seq: int
    reason: str


def summarise(event: Event) -> dict[str, Any]:
    """The JSON summary of an event kept in the timeline (no free text, no location)."""
    return event.model_dump(mode="json", exclude=set(_LEFT_OUT_OF_SUMMARY))


def canonical_entry(
    incident_id: str, seq: int, at: datetime, event_type: str, event_id: str, summary: dict[str, Any]
) -> str:
    """The canonical JSON of an entry's content, the input of its hash."""
    document = {
        "incident_id": incident_id,
        "seq": seq,
        "at": at.astimezone(UTC).isoformat(),
        "event_type": event_type,
        "event_id": event_id,
        "summary": summary,
    }
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_hash(prev_hash: str, canonical: str) -> str:
    """sha256 of the previous hash followed by the entry's canonical JSON."""
    return hashlib.sha256((prev_hash + canonical).encode()).hexdigest()


def next_entry(
    previous: TimelineEntry | None,
    *,
    incident_id: str,
    at: datetime,
    event_type: str,
    event_id: str,
    summary: dict[str, Any],
) -> TimelineEntry:
    """The entry that follows `previous` (or starts the chain), with its hash."""
    seq = previous.seq + 1 if previous else 1
    prev_hash = previous.hash if previous else GENESIS_HASH
    digest = chain_hash(prev_hash, canonical_entry(incident_id, seq, at, event_type, event_id, summary))
    return TimelineEntry(incident_id, seq, at, event_type, event_id, summary, prev_hash, digest)


def head_of(entries: Sequence[TimelineEntry]) -> ChainHead | None:
    """The head that anchors a chain (entries in seq order), or None for an empty one."""
    if not entries:
        return None
    return ChainHead(entries[-1].incident_id, entries[-1].seq, entries[-1].hash)


def first_broken_link(entries: Sequence[TimelineEntry], head: ChainHead | None = None) -> BrokenLink | None:
    """Recompute one incident's chain (entries in seq order); the first entry that fails, or None.

    With `head`, the chain must also end exactly where the anchored head says: fewer entries mean
    the newest were deleted (truncated), a different last hash that the tail was replaced.
    """
    broken = _first_broken_entry(entries)
    if broken is not None or head is None:
        return broken
    length = len(entries)
    if length < head.length:
        return BrokenLink(
            head.incident_id, length + 1, f"truncated: the head records {head.length} entries, {length} remain"
        )
    if length > head.length or entries[-1].hash != head.hash:
        return BrokenLink(head.incident_id, length, "the newest entry does not match the anchored head")
    return None


def _first_broken_entry(entries: Sequence[TimelineEntry]) -> BrokenLink | None:
    expected_prev = GENESIS_HASH
    for position, entry in enumerate(entries, start=1):
        if entry.seq != position:
            return BrokenLink(entry.incident_id, entry.seq, f"expected seq {position}: an entry is missing or inserted")
        if entry.prev_hash != expected_prev:
            return BrokenLink(entry.incident_id, entry.seq, "prev_hash does not match the previous entry's hash")
        recomputed = chain_hash(
            entry.prev_hash,
            canonical_entry(entry.incident_id, entry.seq, entry.at, entry.event_type, entry.event_id, entry.summary),
        )
        if recomputed != entry.hash:
            return BrokenLink(entry.incident_id, entry.seq, "content does not match its hash (entry edited)")
        expected_prev = entry.hash
    return None
