"""The deadline policy: versioned data saying how long each clock of the chain runs.

Defaults follow the practice: report (报到) within 15 minutes when urgent, 2 hours otherwise.
The policy version is stamped on every deadline-bearing event so a figure can always be traced
to the rule that produced it.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field

from contracts.vocabulary import Category, DeadlineKind, Urgency


class ClockDurations(BaseModel):
    """Seconds for each clock of the chain at one urgency."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    report: float = Field(gt=0)
    on_scene: float = Field(gt=0)
    resolution: float = Field(gt=0)
    verification: float = Field(gt=0)


class DeadlinePolicy(BaseModel):
    """Durations per urgency (and optionally per category), plus warning fractions."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str = Field(min_length=1)
    urgent: ClockDurations
    general: ClockDurations
    per_category: dict[Category, dict[Urgency, ClockDurations]] = Field(default_factory=dict)
    warning_fractions: tuple[float, ...] = (0.5, 0.8)
    escalation_report_seconds: float = Field(default=15 * 60, gt=0)

    def duration(self, kind: DeadlineKind, urgency: Urgency, category: Category | None = None) -> timedelta:
        """How long a clock of this kind runs for an incident of this urgency and category."""
        table = self.per_category.get(category, {}).get(urgency) if category else None
        table = table or (self.urgent if urgency is Urgency.URGENT else self.general)
        return timedelta(seconds=getattr(table, kind.value))


DEFAULT_POLICY = DeadlinePolicy(
    version="practice-2026.1",
    urgent=ClockDurations(report=15 * 60, on_scene=30 * 60, resolution=24 * 3600, verification=24 * 3600),
    general=ClockDurations(report=2 * 3600, on_scene=24 * 3600, resolution=72 * 3600, verification=72 * 3600),
)


def load_policy(path: str | Path | None) -> DeadlinePolicy:
    """Load a policy from a YAML/JSON file, or the default policy when no path is given."""
    if not path:
        return DEFAULT_POLICY
    document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    return DeadlinePolicy.model_validate(document)
