"""Negation scopes over the marker itself, never over words that merely start with 没/无/未.

The worst error is an urgent report marked general, so a negation cue must stand right before the
marker (only fillers such as 人, 人员, 造成, "one", "was" between), in the same clause, and never in
a question. Rules alone (no model): these are properties of the taxonomy and the rule engine.
"""

from __future__ import annotations

import pytest
import yaml

from contracts.vocabulary import Category, Urgency
from services.classification.domain import Classifier, ModelOpinion, parse_taxonomy
from services.classification.model import TAXONOMY_PATH, load_taxonomy

RULES = Classifier(load_taxonomy())


def urgency(text: str) -> Urgency:
    return RULES.classify(text).urgency


@pytest.mark.parametrize(
    "text",
    [
        "邻居吵架，无意中把人打伤了",
        "邻居吵架没几句就有人受伤了",
        "没想到小偷还在现场",
        "没多久就有人受伤了",
        "没注意到他手里有刀",
        "无缘无故打人，对方头上流血",
        "没办法，他已经受伤了",
        "未成年人受伤了，在小区门口",
        "没人管，老人摔倒流血了",
        "没有报警，有人受伤流血",
        "不知道有没有人受伤",
        "有没有人受伤还不清楚",
        "邻居吵架，有无人员受伤不清楚",
        "not sure whether anyone is hurt",
        "I don't know if anyone is injured",
        "nobody came to help and he is bleeding",
        "no idea why, but he is bleeding",
        "they did not stop, a man is bleeding",
    ],
)
def test_words_that_only_look_like_negation_keep_the_report_urgent(text):
    decision = RULES.classify(text)
    assert decision.urgency is Urgency.URGENT, decision.rules_fired
    assert not any(r.startswith("negated:") for r in decision.rules_fired if "injury" in r or "ongoing_crime" in r), (
        decision.rules_fired
    )


@pytest.mark.parametrize(
    "text",
    [
        "邻居吵架，没有人受伤",
        "邻居吵架，无人受伤",
        "邻居吵架，没人受伤",
        "邻居为漏水吵架，未造成人员受伤",
        "两家邻居争吵，并没有人受伤",
        "邻居吵架，双方都没有受伤",
        "neighbours arguing, no one was hurt",
        "neighbours quarrel in the corridor, nobody hurt",
        "a dispute between neighbours, nobody was injured",
        "neighbours argued loudly, no injuries",
        "neighbour dispute, he was not injured",
        "neighbours arguing but nobody got hurt",
    ],
)
def test_a_negation_right_before_the_marker_cancels_it(text):
    decision = RULES.classify(text)
    assert decision.category is Category.NEIGHBOUR_DISPUTE, decision.rules_fired
    assert decision.urgency is Urgency.GENERAL, decision.rules_fired
    assert any(r.startswith("negated:injury:") for r in decision.rules_fired)


def test_negation_reaches_only_its_own_clause():
    assert urgency("邻居吵架，没有人受伤，但是有人流血了") is Urgency.URGENT
    assert urgency("没有人受伤，现在有人拿刀") is Urgency.URGENT
    assert urgency("no one was hurt at first, but now a man is bleeding") is Urgency.URGENT


def test_each_marker_needs_its_own_negation():
    # "没有人受伤" negates 受伤, not the knife that comes after it in another clause
    assert urgency("邻居吵架，没有人受伤，对方拿着刀") is Urgency.URGENT
    assert urgency("邻居吵架，没有动手，无人受伤") is Urgency.GENERAL


def test_an_ongoing_crime_split_by_an_address_is_still_ongoing():
    for text in ("现在正在阳光新城B区地下车库偷车", "有人正在5栋楼下撬电动车的锁", "两个人正在幸福路8号砸车窗"):
        decision = RULES.classify(text)
        assert decision.category is Category.THEFT, text
        assert decision.urgency is Urgency.URGENT, (text, decision.rules_fired)
        assert "urgency:ongoing_crime" in decision.rules_fired


def test_a_theft_found_afterwards_stays_general():
    assert urgency("昨晚电动车被偷了，停在楼下没锁") is Urgency.GENERAL
    assert urgency("店里收银台昨晚被撬，少了三千元") is Urgency.GENERAL


def test_fraud_described_in_english_is_fraud():
    for text in (
        "a tenant lost 6500 yuan to an online 'investment advisor'",
        "someone posing as customer service asked my dad for the verification code",
    ):
        decision = RULES.classify(text)
        assert decision.category is Category.TELECOM_FRAUD, (text, decision.rules_fired)
        assert decision.urgency is Urgency.URGENT


def test_fraud_where_no_money_moved_is_general_with_the_reason():
    decision = RULES.classify("居民接到可疑电话称办理贷款要先交保证金，他没有转账，想确认是不是诈骗")
    assert decision.category is Category.TELECOM_FRAUD
    assert decision.urgency is Urgency.GENERAL
    assert "urgency-decision:downgrade:no-money-moved" in decision.rules_fired
    assert urgency("接到冒充客服的诈骗电话，I hung up, no money was lost") is Urgency.GENERAL


def test_fraud_long_ago_is_general_but_not_when_something_happens_today():
    assert urgency("居民上个月在网上刷单被骗了八千，现在想报案") is Urgency.GENERAL
    assert urgency("上个月认识的网友是骗子，今天又骗走了她五万") is Urgency.URGENT


@pytest.mark.parametrize(
    "text",
    [
        "有人冒充公安让我转账到安全账户",  # money about to move
        "他没有转账，但是骗子还在打电话让他转",  # contact continues
        "老人说还没有转账，现在正在去银行的路上，疑似被骗",
        "不知道他有没有转账，对方冒充公检法",  # a question is no downgrade
        "他没有转账，对方冒充公安威胁要杀他全家",  # a danger marker wins
    ],
)
def test_fraud_stays_urgent_while_money_may_still_move(text):
    decision = RULES.classify(text)
    assert decision.category is Category.TELECOM_FRAUD, decision.rules_fired
    assert decision.urgency is Urgency.URGENT, decision.rules_fired


class _StubModel:
    """A model that always gives the same urgency probability and favours neighbour_dispute."""

    version = "model-stub"

    def __init__(self, urgent: float):
        self.urgent = urgent

    def predict(self, text):
        return ModelOpinion(probabilities={Category.OTHER: 0.05, Category.NEIGHBOUR_DISPUTE: 0.95}, urgent_probability=self.urgent)


def test_the_models_urgency_head_makes_an_unrecognised_emergency_urgent():
    text = "邻居家老两口吵架，声音突然停了，屋里没人说话"  # no marker, a worried neighbour
    assert Classifier(load_taxonomy(), _StubModel(0.05)).classify(text).urgency is Urgency.GENERAL
    decision = Classifier(load_taxonomy(), _StubModel(0.5)).classify(text)
    assert decision.urgency is Urgency.URGENT
    assert "urgency-decision:model-urgency" in decision.rules_fired
    assert "model-urgency:0.50" in decision.rules_fired


def test_an_explicit_downgrade_wins_over_the_models_urgency_head():
    class FraudStub(_StubModel):
        def predict(self, text):
            return ModelOpinion(probabilities={Category.TELECOM_FRAUD: 1.0}, urgent_probability=self.urgent)

    decision = Classifier(load_taxonomy(), FraudStub(0.9)).classify("接到冒充客服的诈骗电话，他没有转账，直接挂了")
    assert decision.urgency is Urgency.GENERAL
    assert "urgency-decision:downgrade:no-money-moved" in decision.rules_fired


def test_version_changes_with_the_rules_and_with_the_urgency_threshold():
    taxonomy = load_taxonomy()
    assert Classifier(taxonomy).version == f"{taxonomy.version}+rules-{taxonomy.fingerprint}"
    assert Classifier(taxonomy, model_urgency_threshold=0.5).version != Classifier(taxonomy).version
    data = yaml.safe_load(TAXONOMY_PATH.read_text(encoding="utf-8"))
    data["categories"]["noise"]["keywords"].append("锣鼓")
    assert parse_taxonomy(data).fingerprint != taxonomy.fingerprint
