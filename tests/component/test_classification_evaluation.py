"""Quality gate: the shipped classifier on the held-out split, which training never sees.

The floors are the measured values of the held-out v2 split (urgent recall 0.78, category
macro-F1 0.70 when first evaluated), so a change that makes triage worse fails here. The
issue's goals (urgent recall >= 0.98, macro-F1 >= 0.85) are NOT met yet; the strict xfail tests
record that and will fail loudly, as a reminder to raise the floors, once they are met.
"""

from __future__ import annotations

import pytest

from services.classification.evaluate import MACRO_F1_GOAL, URGENT_RECALL_GOAL, Evaluation, evaluate_heldout

MEASURED_URGENT_RECALL_FLOOR = 0.75
MEASURED_MACRO_F1_FLOOR = 0.65


@pytest.fixture(scope="module")
def heldout() -> Evaluation:
    return evaluate_heldout()


def test_heldout_split_has_reports_of_every_category(heldout):
    assert heldout.n >= 200
    assert all(sum(row) > 0 for row in heldout.confusion)


def test_heldout_urgent_recall_does_not_fall_below_the_measured_floor(heldout):
    assert heldout.urgent_recall >= MEASURED_URGENT_RECALL_FLOOR


def test_heldout_category_macro_f1_does_not_fall_below_the_measured_floor(heldout):
    assert heldout.macro_f1 >= MEASURED_MACRO_F1_FLOOR


@pytest.mark.xfail(strict=True, reason="goal not reached yet: held-out v2 urgent recall 0.78 (see README)")
def test_heldout_urgent_recall_meets_the_goal(heldout):
    assert heldout.urgent_recall >= URGENT_RECALL_GOAL


@pytest.mark.xfail(strict=True, reason="goal not reached yet: held-out v2 macro-F1 0.70 (see README)")
def test_heldout_category_macro_f1_meets_the_goal(heldout):
    assert heldout.macro_f1 >= MACRO_F1_GOAL
