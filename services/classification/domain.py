"""Pure triage (分流): category and urgency from a report's text. No I/O, no framework.

The classification standard (categories, default urgencies, keywords, urgency markers, negation
cues) is versioned data, parsed here from a plain mapping into a `Taxonomy`. A statistical model
is optional and reaches this module only through the `CategoryModel` protocol, so the rules can
be tested and reasoned about alone.

The worst error this service can make is calling an emergency "general" (a 2-hour clock on a
15-minute matter), so urgency errs towards urgent: any danger marker that is not negated makes
the incident urgent, so does a report that could well belong to an urgent category, and so does
an empty or unreadable report.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from contracts.vocabulary import Category, Urgency

# Chinese negation reaches only a few characters back ("没有人受伤"); English a few words
# ("no one was hurt"). Neither crosses a clause boundary ("没有报警，有人受伤" is urgent).
NEGATION_WINDOW_ZH = 6
NEGATION_WINDOW_EN_WORDS = 4
_CLAUSE_BREAK = re.compile(r"[,.!?;:，。！？；：\n]|但是|但|可是|不过|\bbut\b")
_ENGLISH_WORD = re.compile(r"[a-z']+")
# Urgent-category probability mass above which an uncertain report is treated as urgent.
URGENT_DOUBT_MASS = 0.3
# Weight of the statistical model against the keyword rules when both have an opinion; chosen
# by template-grouped cross-validation on the training split (evaluate --dev), never held-out.
MODEL_WEIGHT = 0.4
# A category hint from the grid worker counts like this many keyword hits.
HINT_WEIGHT = 1.5


@dataclass(frozen=True)
class CategoryRule:
    """One category of the classification standard."""

    category: Category
    default_urgency: Urgency
    description_zh: str
    description_en: str
    keywords: tuple[str, ...]


@dataclass(frozen=True)
class Taxonomy:
    """The versioned classification standard: categories, urgency markers, negation cues."""

    version: str
    categories: Mapping[Category, CategoryRule]
    urgency_markers: Mapping[str, tuple[str, ...]]
    weak_markers: frozenset[str]
    negations_zh: tuple[str, ...]
    negations_en: frozenset[str]
    not_negations: tuple[str, ...]
    _patterns: dict[str, re.Pattern[str]] = field(default_factory=dict, repr=False, compare=False)

    def urgent_by_default(self) -> frozenset[Category]:
        """Categories whose default urgency is urgent."""
        return frozenset(c for c, rule in self.categories.items() if rule.default_urgency is Urgency.URGENT)

    def pattern(self, keyword: str) -> re.Pattern[str]:
        """Compiled matcher of a keyword: substring for Chinese, word prefix for English."""
        compiled = self._patterns.get(keyword)
        if compiled is None:
            prefix = r"(?<![a-z0-9])" if keyword[:1].isascii() and keyword[:1].isalnum() else ""
            compiled = self._patterns[keyword] = re.compile(prefix + re.escape(keyword))
        return compiled


def parse_taxonomy(data: Mapping[str, Any]) -> Taxonomy:
    """Build a Taxonomy from its data (the parsed taxonomy YAML); every Category must be present."""
    raw_categories = data["categories"]
    missing = {c.value for c in Category} - set(raw_categories)
    if missing:
        raise ValueError(f"taxonomy {data.get('version')} lacks categories: {sorted(missing)}")
    categories = {
        Category(name): CategoryRule(
            category=Category(name),
            default_urgency=Urgency(entry["default_urgency"]),
            description_zh=entry["description"]["zh"],
            description_en=entry["description"]["en"],
            keywords=tuple(str(k).lower() for k in entry.get("keywords") or ()),
        )
        for name, entry in raw_categories.items()
    }
    markers = {kind: tuple(str(w).lower() for w in words) for kind, words in data["urgency_markers"].items()}
    weak = frozenset(data.get("weak_markers") or ())
    if not weak <= set(markers):
        raise ValueError(f"weak markers {sorted(weak - set(markers))} are not urgency markers")
    negations = data["negations"]
    return Taxonomy(
        version=str(data["version"]),
        categories=categories,
        urgency_markers=markers,
        weak_markers=weak,
        negations_zh=tuple(negations["zh"]),
        negations_en=frozenset(n.strip() for n in negations["en"]),
        not_negations=tuple(str(n).lower() for n in negations.get("not_negations") or ()),
    )


@dataclass(frozen=True)
class ModelOpinion:
    """What a statistical model thinks: a probability per category and the features behind it."""

    probabilities: Mapping[Category, float]
    top_features: tuple[str, ...] = ()


class CategoryModel(Protocol):
    """A trained text model as the domain sees it."""

    version: str

    def predict(self, text: str) -> ModelOpinion:
        """Category probabilities for a normalised report text."""
        ...


@dataclass(frozen=True)
class Decision:
    """The outcome of triage for one report, with its reasons."""

    category: Category
    urgency: Urgency
    priority: int
    confidence: float
    rules_fired: tuple[str, ...]
    needs_review: bool
    version: str


def normalise(text: str) -> str:
    """Lower-case, collapse whitespace, unify full-width punctuation."""
    text = text.lower().replace("！", "!").replace("，", ",").replace("。", ".")
    return re.sub(r"\s+", " ", text).strip()


def _clause_before(text: str, start: int) -> str:
    before = text[:start]
    breaks = list(_CLAUSE_BREAK.finditer(before))
    return before[breaks[-1].end() :] if breaks else before


def _negated(taxonomy: Taxonomy, text: str, start: int) -> bool:
    clause = _clause_before(text, start)
    if any(q in clause for q in taxonomy.not_negations):
        return False  # a question or uncertainty ("有没有人受伤"): when in doubt, not negated
    if any(n in clause[-NEGATION_WINDOW_ZH:] for n in taxonomy.negations_zh):
        return True
    words = _ENGLISH_WORD.findall(clause)[-NEGATION_WINDOW_EN_WORDS:]
    return any(w in taxonomy.negations_en or w.endswith("n't") for w in words)


def _hits(taxonomy: Taxonomy, text: str, keywords: tuple[str, ...]) -> list[str]:
    found = []
    for word in keywords:
        if any(not _negated(taxonomy, text, m.start()) for m in taxonomy.pattern(word).finditer(text)):
            found.append(word)
    return found


class Classifier:
    """Keyword rules of a taxonomy, optionally blended with a statistical model."""

    def __init__(self, taxonomy: Taxonomy, model: CategoryModel | None = None, review_threshold: float = 0.6):
        self.taxonomy = taxonomy
        self.model = model
        self.review_threshold = review_threshold
        self.urgent_categories = taxonomy.urgent_by_default()
        self.version = f"{taxonomy.version}+{model.version}" if model else taxonomy.version

    def classify(self, description: str, category_hint: Category | None = None) -> Decision:
        """Decide category and urgency with confidence and reasons; when in doubt, urgent."""
        text = normalise(description)
        fired: list[str] = []
        probabilities = self._category_probabilities(text, category_hint, fired)
        if probabilities:
            category, confidence = max(probabilities.items(), key=lambda kv: (kv[1], kv[0] in self.urgent_categories))
        else:
            category, confidence = Category.OTHER, 0.3
        urgent_mass = sum(p for c, p in probabilities.items() if c in self.urgent_categories)

        markers = {kind for kind, words in self.taxonomy.urgency_markers.items() if _hits(self.taxonomy, text, words)}
        fired.extend(f"urgency:{m}" for m in sorted(markers))
        strong = markers - self.taxonomy.weak_markers
        if category in self.urgent_categories:
            urgency, reason = Urgency.URGENT, "urgent-category"
        elif strong or (self.taxonomy.weak_markers and markers >= self.taxonomy.weak_markers):
            urgency, reason = Urgency.URGENT, "danger-marker"
        elif not text and category_hint is None:
            urgency, reason = Urgency.URGENT, "unreadable-report"
        elif urgent_mass >= URGENT_DOUBT_MASS:
            urgency, reason = Urgency.URGENT, "maybe-urgent-category"
        elif confidence < self.review_threshold:
            # Unsure what it is: a person will review it; until then it runs on the 15-minute clock.
            urgency, reason = Urgency.URGENT, "uncertain-category"
        else:
            urgency, reason = Urgency.GENERAL, "no-danger"
        fired.append(f"urgency-decision:{reason}")

        confidence = round(min(confidence, 0.99), 3)
        return Decision(
            category=category,
            urgency=urgency,
            priority=_priority(urgency, strong, markers),
            confidence=confidence,
            rules_fired=tuple(fired),
            needs_review=confidence < self.review_threshold or reason == "unreadable-report",
            version=self.version,
        )

    def _category_probabilities(self, text: str, hint: Category | None, fired: list[str]) -> dict[Category, float]:
        rule_scores: dict[Category, float] = {}
        for category, rule in self.taxonomy.categories.items():
            hits = _hits(self.taxonomy, text, rule.keywords)
            if hits:
                # Longer phrases are more specific than single words ("fire exit" vs "fire").
                rule_scores[category] = sum(1 + min(len(h), 12) / 12 for h in hits)
                fired.extend(f"category:{category.value}:{h}" for h in hits)
        if hint is not None:
            rule_scores[hint] = rule_scores.get(hint, 0.0) + HINT_WEIGHT
            fired.append(f"hint:{hint.value}")
        rule_total = sum(rule_scores.values())
        rules = {c: s / rule_total for c, s in rule_scores.items()}

        # An empty text tells a model nothing but its priors; only the hint speaks then.
        if self.model is None or not text:
            return rules
        opinion = self.model.predict(text)
        fired.extend(f"model:{feature}" for feature in opinion.top_features)
        if not rules:
            return dict(opinion.probabilities)
        return {
            c: MODEL_WEIGHT * opinion.probabilities.get(c, 0.0) + (1 - MODEL_WEIGHT) * rules.get(c, 0.0)
            for c in set(opinion.probabilities) | set(rules)
        }


def _priority(urgency: Urgency, strong: set[str], markers: set[str]) -> int:
    if urgency is Urgency.URGENT:
        return 1 if {"danger_to_life", "injury", "fire"} & strong else 2
    return 3 if markers else 4
