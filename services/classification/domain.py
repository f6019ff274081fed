"""Pure triage (分流): category and urgency from a report's text. No I/O, no framework.

The classification standard (categories, default urgencies, keywords, urgency markers, negation
cues, category-specific escalations and downgrades) is versioned data, parsed here from a plain
mapping into a `Taxonomy`. A statistical model is optional and reaches this module only through
the `CategoryModel` protocol, so the rules can be tested and reasoned about alone.

The worst error this service can make is calling an emergency "general" (a 2-hour clock on a
15-minute matter), so urgency errs towards urgent: any danger marker that is not negated makes
the incident urgent, so does a report that could well belong to an urgent category, a report the
model's urgency head thinks may be urgent (probability >= URGENT_MODEL_THRESHOLD), a report the
classifier is unsure about, and an empty or unreadable report. An urgent-by-default category is
made general only by an explicit downgrade cue of the taxonomy ("他没有转账", "上个月被骗"), never
when a danger marker fires (except the kinds a downgrade overrides), and never when the
classifier is unsure; an explicit downgrade wins over the urgency head.

Negation scopes over the marker itself: a cue (没有, 无, 未, not, no, …) counts only when nothing
but scope fillers (人, 人员, 造成, 发现, one, was, any, …) stands between it and the marker, in the
same clause: "没有人受伤", "无人受伤", "未造成人员受伤", "no one was hurt", "not injured" are negated;
"无意中把人打伤", "没几句就有人受伤", "没想到小偷还在现场" are not, and neither is a question
("有没有人受伤", "不知道有没有人受伤").
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from contracts.vocabulary import Category, Urgency

_CLAUSE_BREAK = re.compile(r"[,.!?;:，。！？；：\n]|但是|但|可是|不过|\bbut\b")
# What a gap ("正在…偷") may span: anything but a clause break, at most this many characters.
GAP_MAX_CHARS = 12
_GAP = "…"
_GAP_BODY = r"[^,.!?;:，。！？；：\n]{0,%d}" % GAP_MAX_CHARS
# Urgent-category probability mass above which an uncertain report is treated as urgent.
URGENT_DOUBT_MASS = 0.3
# Weight of the statistical model against the keyword rules when both have an opinion; chosen
# by cross-validation on the training split (evaluate --dev), never on a held-out set.
MODEL_WEIGHT = 0.4
# The model's urgency head makes a report urgent at or above this probability (unless an explicit
# downgrade rule applies); chosen low on development data: missing an emergency costs far more
# than a 15-minute clock on a general matter.
URGENT_MODEL_THRESHOLD = 0.2
# A category hint from the grid worker counts like this many keyword hits.
HINT_WEIGHT = 1.5
# The rules' own code is part of their version: a change here is a change of the rules.
_RULES_SOURCE = Path(__file__).read_bytes()


@dataclass(frozen=True)
class CategoryRule:
    """One category of the classification standard."""

    category: Category
    default_urgency: Urgency
    description_zh: str
    description_en: str
    keywords: tuple[str, ...]


@dataclass(frozen=True)
class Downgrade:
    """Cues that make an urgent-by-default category general ("他没有转账，想确认是不是诈骗").

    Every group in `all_of` must have a hit (a hit is never inside a question); none of `unless`
    may appear; each marker kind in `requires_negated` must have been seen negated ("没人受伤").
    A danger marker blocks the downgrade unless its kind is in `overrides` (a past assault reported
    to file a case carries a violence marker by nature, but no injury or danger marker).
    """

    name: str
    all_of: tuple[tuple[str, ...], ...]
    unless: tuple[str, ...] = ()
    requires_negated: frozenset[str] = frozenset()
    overrides: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Taxonomy:
    """The versioned classification standard: categories, urgency markers, negation cues."""

    version: str
    categories: Mapping[Category, CategoryRule]
    urgency_markers: Mapping[str, tuple[str, ...]]
    weak_markers: frozenset[str]
    negations_zh: tuple[str, ...]
    negations_en: tuple[str, ...]
    not_negations: tuple[str, ...]
    scope_fillers_zh: tuple[str, ...] = ()
    scope_fillers_en: tuple[str, ...] = ()
    escalations: Mapping[Category, tuple[str, ...]] = field(default_factory=dict)
    downgrades: Mapping[Category, tuple[Downgrade, ...]] = field(default_factory=dict)
    # Hash of the taxonomy data and of this module's code: any change to either is a new one.
    fingerprint: str = ""
    _patterns: dict[str, re.Pattern[str]] = field(default_factory=dict, repr=False, compare=False)
    _negation: list[re.Pattern[str]] = field(default_factory=list, repr=False, compare=False)
    _matchers: dict[int, tuple] = field(default_factory=dict, repr=False, compare=False)

    def urgent_by_default(self) -> frozenset[Category]:
        """Categories whose default urgency is urgent."""
        return frozenset(c for c, rule in self.categories.items() if rule.default_urgency is Urgency.URGENT)

    def pattern(self, keyword: str) -> re.Pattern[str]:
        """Compiled matcher of a keyword: substring for Chinese, word prefix for English; a "…"
        inside a keyword stands for a short gap within the clause ("正在…偷" matches "正在幸福路偷")."""
        compiled = self._patterns.get(keyword)
        if compiled is None:
            prefix = r"(?<![a-z0-9])" if keyword[:1].isascii() and keyword[:1].isalnum() else ""
            body = _GAP_BODY.join(re.escape(part) for part in keyword.split(_GAP))
            compiled = self._patterns[keyword] = re.compile(prefix + body)
        return compiled

    def matchers(self, keywords: tuple[str, ...]) -> tuple[tuple[str, str, re.Pattern[str]], ...]:
        """(keyword, a literal every match contains, matcher) per keyword of a list, cached; the
        literal lets a scan reject absent keywords with a substring test before any regex."""
        cached = self._matchers.get(id(keywords))
        if cached is None or cached[0] is not keywords:
            built = tuple((k, max(k.split(_GAP), key=len), self.pattern(k)) for k in keywords)
            cached = self._matchers[id(keywords)] = (keywords, built)
        return cached[1]

    def negation_patterns(self) -> list[re.Pattern[str]]:
        """A clause ending in a negation cue followed only by scope fillers negates what follows."""
        if not self._negation:
            zh_cues = _alternation(self.negations_zh)
            zh_fill = _alternation(self.scope_fillers_zh)
            en_cues = _alternation(self.negations_en)
            en_fill = _alternation(self.scope_fillers_en)
            self._negation.append(re.compile(rf"(?:{zh_cues})(?:\s*(?:{zh_fill}))*\s*$"))
            self._negation.append(
                re.compile(rf"(?:(?<![a-z'])(?:{en_cues})|[a-z]n't)(?:\s+(?:{en_fill}))*\s+$")
            )
        return self._negation


def _alternation(words: tuple[str, ...]) -> str:
    """Regex alternation, longest first so that 没有 wins over 没; never matches when empty."""
    ordered = sorted({w for w in words if w}, key=len, reverse=True)
    return "|".join(re.escape(w) for w in ordered) or r"(?!x)x"


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
            keywords=_lower(entry.get("keywords")),
        )
        for name, entry in raw_categories.items()
    }
    markers = {kind: _lower(words) for kind, words in data["urgency_markers"].items()}
    weak = frozenset(data.get("weak_markers") or ())
    if not weak <= set(markers):
        raise ValueError(f"weak markers {sorted(weak - set(markers))} are not urgency markers")
    negations = data["negations"]
    downgrades: dict[Category, tuple[Downgrade, ...]] = {}
    for name, entries in (data.get("downgrades") or {}).items():
        category = Category(name)
        if categories[category].default_urgency is not Urgency.URGENT:
            raise ValueError(f"downgrade for {name}, which is not urgent by default")
        parsed = []
        for entry in entries:
            requires = frozenset(entry.get("requires_negated") or ())
            overrides = frozenset(entry.get("overrides") or ())
            unknown = (requires | overrides) - set(markers)
            if unknown:
                raise ValueError(f"downgrade {entry['name']} names unknown markers {sorted(unknown)}")
            parsed.append(
                Downgrade(
                    name=str(entry["name"]),
                    all_of=tuple(_lower(group) for group in entry.get("all_of") or ()),
                    unless=_lower(entry.get("unless")),
                    requires_negated=requires,
                    overrides=overrides,
                )
            )
        downgrades[category] = tuple(parsed)
    canonical = json.dumps(data, sort_keys=True, ensure_ascii=False, default=str).encode()
    return Taxonomy(
        version=str(data["version"]),
        categories=categories,
        urgency_markers=markers,
        weak_markers=weak,
        negations_zh=tuple(str(n) for n in negations["zh"]),
        negations_en=tuple(str(n).strip().lower() for n in negations["en"]),
        not_negations=_lower(negations.get("not_negations")),
        scope_fillers_zh=tuple(str(n) for n in negations.get("scope_fillers_zh") or ()),
        scope_fillers_en=_lower(negations.get("scope_fillers_en")),
        escalations={Category(name): _lower(words) for name, words in (data.get("escalations") or {}).items()},
        downgrades=downgrades,
        fingerprint=hashlib.sha256(canonical + b"\0" + _RULES_SOURCE).hexdigest()[:8],
    )


def _lower(words: Any) -> tuple[str, ...]:
    return tuple(str(w).lower() for w in words or ())


@dataclass(frozen=True)
class ModelOpinion:
    """What a statistical model thinks: a probability per category, the features behind it, and
    (if the model has an urgency head) the probability that the report is urgent."""

    probabilities: Mapping[Category, float]
    top_features: tuple[str, ...] = ()
    urgent_probability: float | None = None


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


def _clause_start(text: str, position: int) -> int:
    start = 0
    for found in _CLAUSE_BREAK.finditer(text, 0, position):
        start = found.end()
    return start


def _questioned(taxonomy: Taxonomy, text: str, start: int, end: int) -> bool:
    """Whether the clause up to `end` asks or doubts ("有没有人受伤", "not sure if anyone is hurt")."""
    clause = text[_clause_start(text, start) : end]
    return any(q in clause for q in taxonomy.not_negations)


def _negated(taxonomy: Taxonomy, text: str, start: int) -> bool:
    """Whether the word at `start` is in the scope of a negation cue (and not in a question)."""
    clause = text[_clause_start(text, start) : start]
    if not clause or any(q in clause for q in taxonomy.not_negations):
        return False  # a question or uncertainty: when in doubt, not negated
    return any(p.search(clause) for p in taxonomy.negation_patterns())


def _hits(taxonomy: Taxonomy, text: str, keywords: tuple[str, ...], negated: list[str] | None = None) -> list[str]:
    """Keywords with at least one occurrence that is not negated; negated ones go to `negated`."""
    found = []
    for word, literal, pattern in taxonomy.matchers(keywords):
        if literal not in text:
            continue
        occurrences = [m.start() for m in pattern.finditer(text)]
        if not occurrences:
            continue
        if any(not _negated(taxonomy, text, at) for at in occurrences):
            found.append(word)
        elif negated is not None:
            negated.append(word)
    return found


def _plain_hits(taxonomy: Taxonomy, text: str, cues: tuple[str, ...]) -> list[str]:
    """Cues present outside a question (used for downgrade cues, which carry their own negation)."""
    return [
        cue
        for cue, literal, pattern in taxonomy.matchers(cues)
        if literal in text and any(not _questioned(taxonomy, text, m.start(), m.end()) for m in pattern.finditer(text))
    ]


class Classifier:
    """Keyword rules of a taxonomy, optionally blended with a statistical model."""

    def __init__(
        self,
        taxonomy: Taxonomy,
        model: CategoryModel | None = None,
        review_threshold: float = 0.6,
        model_weight: float = MODEL_WEIGHT,
        model_urgency_threshold: float = URGENT_MODEL_THRESHOLD,
    ):
        self.taxonomy = taxonomy
        self.model = model
        self.review_threshold = review_threshold
        self.model_weight = model_weight
        self.model_urgency_threshold = model_urgency_threshold
        self.urgent_categories = taxonomy.urgent_by_default()
        rules = f"{taxonomy.version}+rules-{taxonomy.fingerprint}"
        if model_weight != MODEL_WEIGHT or model_urgency_threshold != URGENT_MODEL_THRESHOLD:
            rules += f"-w{model_weight}-u{model_urgency_threshold}"
        self.version = f"{rules}+{model.version}" if model else rules

    def classify(self, description: str, category_hint: Category | None = None) -> Decision:
        """Decide category and urgency with confidence and reasons; when in doubt, urgent."""
        text = normalise(description)
        fired: list[str] = []
        probabilities, opinion = self._category_probabilities(text, category_hint, fired)
        model_urgent = opinion.urgent_probability if opinion is not None else None
        if probabilities:
            category, confidence = max(probabilities.items(), key=lambda kv: (kv[1], kv[0] in self.urgent_categories))
        else:
            category, confidence = Category.OTHER, 0.3

        negated: dict[str, list[str]] = {}
        markers = set()
        for kind, words in self.taxonomy.urgency_markers.items():
            negated_words: list[str] = []
            if _hits(self.taxonomy, text, words, negated_words):
                markers.add(kind)
            if negated_words:
                negated[kind] = negated_words
        fired.extend(f"urgency:{m}" for m in sorted(markers))
        fired.extend(f"negated:{kind}:{word}" for kind in sorted(negated) for word in negated[kind])
        strong = markers - self.taxonomy.weak_markers
        escalation = _hits(self.taxonomy, text, self.taxonomy.escalations.get(category, ()))
        fired.extend(f"escalation:{category.value}:{cue}" for cue in escalation)
        sure = confidence >= self.review_threshold
        downgrade = None
        if category in self.urgent_categories and not escalation and sure:
            downgrade = self._downgrade(text, category, strong, set(negated), fired)
            if downgrade is not None:
                strong = strong - downgrade.overrides
        # A downgraded category's own mass no longer argues for urgency; other urgent ones still do.
        urgent_mass = sum(
            p for c, p in probabilities.items() if c in self.urgent_categories and not (downgrade and c is category)
        )

        if category in self.urgent_categories and downgrade is None:
            urgency, reason = Urgency.URGENT, "urgent-category"
        elif strong or escalation or (self.taxonomy.weak_markers and markers >= self.taxonomy.weak_markers):
            urgency, reason = Urgency.URGENT, "danger-marker"
        elif not text and category_hint is None:
            urgency, reason = Urgency.URGENT, "unreadable-report"
        elif urgent_mass >= URGENT_DOUBT_MASS:
            urgency, reason = Urgency.URGENT, "maybe-urgent-category"
        elif downgrade is None and model_urgent is not None and model_urgent >= self.model_urgency_threshold:
            urgency, reason = Urgency.URGENT, "model-urgency"
        elif not sure:
            # Unsure what it is: a person will review it; until then it runs on the 15-minute clock.
            urgency, reason = Urgency.URGENT, "uncertain-category"
        elif downgrade is not None:
            urgency, reason = Urgency.GENERAL, f"downgrade:{downgrade.name}"
        else:
            urgency, reason = Urgency.GENERAL, "no-danger"
        if model_urgent is not None:
            fired.append(f"model-urgency:{model_urgent:.2f}")
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

    def _downgrade(
        self, text: str, category: Category, strong: set[str], negated_kinds: set[str], fired: list[str]
    ) -> Downgrade | None:
        for rule in self.taxonomy.downgrades.get(category, ()):
            if strong - rule.overrides or not rule.requires_negated <= negated_kinds:
                continue
            if _plain_hits(self.taxonomy, text, rule.unless):
                continue
            groups = [_plain_hits(self.taxonomy, text, group) for group in rule.all_of]
            if groups and all(groups):
                fired.extend(f"downgrade:{rule.name}:{hits[0]}" for hits in groups)
                return rule
        return None

    def _category_probabilities(
        self, text: str, hint: Category | None, fired: list[str]
    ) -> tuple[dict[Category, float], ModelOpinion | None]:
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
            return rules, None
        opinion = self.model.predict(text)
        fired.extend(f"model:{feature}" for feature in opinion.top_features)
        if not rules:
            return dict(opinion.probabilities), opinion
        blended = {
            c: self.model_weight * opinion.probabilities.get(c, 0.0) + (1 - self.model_weight) * rules.get(c, 0.0)
            for c in set(opinion.probabilities) | set(rules)
        }
        return blended, opinion


def _priority(urgency: Urgency, strong: set[str], markers: set[str]) -> int:
    if urgency is Urgency.URGENT:
        return 1 if {"danger_to_life", "injury", "fire"} & strong else 2
    return 3 if markers else 4
