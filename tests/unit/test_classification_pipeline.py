"""The production classifier (taxonomy rules + model refitted from the corpus) on tricky reports."""

from __future__ import annotations

import pytest

from contracts.reference import RESPONSIBILITY_LIST
from contracts.vocabulary import Category, Urgency
from services.classification.domain import Classifier, normalise, parse_taxonomy
from services.classification.evaluate import HELDOUT_V3_PATH, load_heldout_v3
from services.classification.model import load_classifier, load_corpus, load_taxonomy, model_version


@pytest.fixture(scope="module")
def classifier() -> Classifier:
    return load_classifier()


def test_negated_injury_keeps_a_dispute_general_in_chinese_and_english(classifier):
    for text in ("楼上楼下两家吵架，没有人受伤", "neighbours arguing in the corridor, no one was hurt"):
        decision = classifier.classify(text)
        assert decision.category is Category.NEIGHBOUR_DISPUTE, text
        assert decision.urgency is Urgency.GENERAL, (text, decision.rules_fired)


def test_a_question_about_injury_is_not_a_negation(classifier):
    decision = classifier.classify("邻居吵架，不知道有没有人受伤")
    assert decision.urgency is Urgency.URGENT
    assert "urgency:injury" in decision.rules_fired


def test_negation_does_not_reach_across_a_clause(classifier):
    assert classifier.classify("邻居吵架没有报警，有人受伤流血").urgency is Urgency.URGENT


def test_mixed_language_report_is_understood(classifier):
    decision = classifier.classify("3栋楼下 someone stole my 电动车 last night")
    assert decision.category is Category.THEFT


def test_emoji_only_fire_report_is_urgent_fire(classifier):
    decision = classifier.classify("🔥🔥")
    assert (decision.category, decision.urgency) == (Category.FIRE, Urgency.URGENT)


def test_very_short_unclear_text_goes_to_review_and_runs_on_the_urgent_clock(classifier):
    decision = classifier.classify("快")
    assert decision.needs_review
    assert decision.urgency is Urgency.URGENT


def test_empty_description_with_category_hint_trusts_the_hint(classifier):
    decision = classifier.classify("", Category.NOISE)
    assert (decision.category, decision.urgency) == (Category.NOISE, Urgency.GENERAL)
    assert not decision.needs_review
    assert not any(r.startswith("model:") for r in decision.rules_fired)


def test_typo_from_pinyin_input_is_still_classified(classifier):
    # 正再 for 正在, 抱警 for 报警: the character n-grams carry it
    decision = classifier.classify("有人正再撬我家门锁偷东西，我要抱警")
    assert decision.category is Category.THEFT


def test_every_decision_carries_reasons_and_the_combined_version(classifier):
    decision = classifier.classify("小区垃圾堆放好几天没人清理，很臭")
    assert decision.category is Category.ENVIRONMENT
    assert any(r.startswith("category:environment:") for r in decision.rules_fired)
    assert any(r.startswith("model:") for r in decision.rules_fired)
    taxonomy_version, rules_part, model_part = decision.version.split("+")
    assert taxonomy_version == load_taxonomy().version
    assert rules_part == f"rules-{load_taxonomy().fingerprint}"
    assert model_part.startswith("model-")
    assert 0 < decision.confidence < 1


def test_taxonomy_covers_every_category_and_every_category_has_a_responsible_department():
    taxonomy = load_taxonomy()
    assert set(taxonomy.categories) == set(Category)
    assert {r.category for r in RESPONSIBILITY_LIST} == set(Category)
    assert all(rule.keywords for c, rule in taxonomy.categories.items() if c is not Category.OTHER)


def test_a_taxonomy_missing_a_category_is_refused():
    with pytest.raises(ValueError, match="lacks categories"):
        parse_taxonomy({"version": "x", "categories": {}, "urgency_markers": {}, "negations": {"zh": [], "en": []}})


def test_model_version_is_stable_for_the_same_data_and_changes_with_it():
    train = load_corpus(split="train")
    assert model_version(train) == model_version(list(train))
    assert model_version(train) != model_version(train[:-1])


def test_model_is_fitted_on_the_training_corpus_which_shares_nothing_with_heldout_v3(classifier):
    train = load_corpus(split="train")
    assert len(train) == len(load_corpus())
    assert classifier.model is not None
    assert classifier.model.version == model_version(train)
    heldout = load_heldout_v3()
    assert not {r["text"] for r in train} & {r["text"] for r in heldout}


def test_heldout_v3_is_frozen(tmp_path):
    edited = tmp_path / "v3.jsonl"
    edited.write_bytes(HELDOUT_V3_PATH.read_bytes().replace("邻居".encode(), "邻里".encode(), 1))
    with pytest.raises(ValueError, match="was edited"):
        load_heldout_v3(edited)
    assert len(load_heldout_v3()) >= 400


def test_model_opinion_is_a_probability_per_category(classifier):
    opinion = classifier.model.predict("电动车被偷了")
    assert set(opinion.probabilities) <= set(Category)
    assert sum(opinion.probabilities.values()) == pytest.approx(1.0)
    assert opinion.top_features
    assert 0.0 <= opinion.urgent_probability <= 1.0


def test_urgency_head_separates_emergencies_from_questions(classifier):
    emergency = classifier.model.predict(normalise("有人晕倒在路边，叫不醒")).urgent_probability
    question = classifier.model.predict(normalise("请问居住证怎么办理")).urgent_probability
    assert emergency > 0.5 > question


def test_single_report_fast_path_gives_the_fitted_pipelines_probabilities(classifier):
    model = classifier.model
    for record in load_corpus(split="train")[::97]:
        text = normalise(record["text"])
        expected = model.pipeline.predict_proba([text])[0]
        got = model.predict(text).probabilities
        assert [got[Category(c)] for c in model.pipeline.classes_] == pytest.approx(list(expected))
