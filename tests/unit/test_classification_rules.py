"""Triage rules of the shipped taxonomy alone (no model): urgency errs towards urgent, negation
is understood, hints help."""

from __future__ import annotations

import pytest

from contracts.vocabulary import Category, Urgency
from services.classification.domain import Classifier
from services.classification.model import load_taxonomy

TAXONOMY = load_taxonomy()
RULES = Classifier(TAXONOMY)
classify = RULES.classify


@pytest.mark.parametrize(
    ("text", "category", "urgency"),
    [
        ("楼下有人打架，有人流血", Category.VIOLENCE, Urgency.URGENT),
        ("厨房着火了，浓烟很大", Category.FIRE, Urgency.URGENT),
        ("有人冒充公安让我转账到安全账户", Category.TELECOM_FRAUD, Urgency.URGENT),
        ("邻居装修噪音太大，晚上十点还在施工", Category.NOISE, Urgency.GENERAL),
        ("小区垃圾堆放很臭", Category.ENVIRONMENT, Urgency.GENERAL),
        ("请问居住证怎么办理", Category.CONSULTATION, Urgency.GENERAL),
        ("My bike was stolen from the yard", Category.THEFT, Urgency.GENERAL),
        ("A man collapsed on the street and is not breathing", Category.MEDICAL_EMERGENCY, Urgency.URGENT),
    ],
)
def test_clear_reports_get_category_and_urgency(text, category, urgency):
    decision = classify(text)
    assert (decision.category, decision.urgency) == (category, urgency)
    assert decision.version == RULES.version
    assert decision.version.startswith(TAXONOMY.version + "+rules-")
    assert decision.rules_fired


def test_negated_injury_does_not_make_a_dispute_urgent():
    decision = classify("邻居吵架，没有人受伤")
    assert decision.category is Category.NEIGHBOUR_DISPUTE
    assert decision.urgency is Urgency.GENERAL


def test_injury_without_negation_makes_a_dispute_urgent():
    assert classify("邻居吵架，有人受伤了").urgency is Urgency.URGENT


def test_vulnerable_person_alone_is_not_an_emergency_but_with_danger_it_is():
    assert classify("独居老人申请低保").urgency is Urgency.GENERAL
    assert classify("独居老人家里燃气泄漏").urgency is Urgency.URGENT


def test_empty_description_with_hint_uses_the_hint():
    decision = RULES.classify("", Category.THEFT)
    assert decision.category is Category.THEFT
    assert decision.urgency is Urgency.GENERAL


def test_empty_description_without_hint_is_urgent_and_needs_review():
    decision = classify("   ")
    assert decision.urgency is Urgency.URGENT
    assert decision.needs_review


def test_emoji_and_mixed_language_are_understood():
    assert classify("🔥🔥 kitchen").category is Category.FIRE
    assert classify("楼道 fire exit blocked 堆满杂物").category is Category.SAFETY_HAZARD


def test_unknown_text_is_other_with_low_confidence():
    decision = classify("abc xyz")
    assert decision.category is Category.OTHER
    assert decision.needs_review
