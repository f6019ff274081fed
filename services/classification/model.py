"""The statistical category model and the loading of classification data (taxonomy, corpus).

Decision: the model is NOT a pickled artefact. It is refitted at start from the training split of
the shipped corpus (data/corpus.jsonl), which takes about a second, so there is no binary to
drift from the code or the library version, and nothing to unpickle. Its version is a hash of
the training data and the model configuration, so the same corpus always yields the same
version, and any change to either yields a new one.

Features: TF-IDF over jieba words (Chinese has no word spaces; jieba ships its dictionary) plus
TF-IDF over character 1-3-grams (robust to typos and to words jieba does not know), fed to a
multinomial logistic regression whose probabilities are the model's confidence, and to a binary
logistic regression on the urgency labels (the urgency head), whose probability lets the domain
call a report urgent that no keyword rule recognises (when in doubt, urgent).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jieba
import numpy as np
import sklearn
import yaml
from scipy.special import expit, softmax
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline

from contracts.vocabulary import Category
from services.classification.domain import Classifier, ModelOpinion, Taxonomy, normalise, parse_taxonomy

DATA_DIR = Path(__file__).parent / "data"
TAXONOMY_PATH = DATA_DIR / "taxonomy.yaml"
CORPUS_PATH = DATA_DIR / "corpus.jsonl"
TOP_FEATURES = 3
# The model's own code is part of its version, with the configuration and the training data.
_MODEL_SOURCE = Path(__file__).read_bytes()
_EMOJI_START = 0x1F300  # emoji carry meaning in reports ("🔥"); other symbols do not

jieba.setLogLevel(logging.WARNING)


def words(text: str) -> list[str]:
    """jieba words of a normalised text, without whitespace and punctuation tokens."""
    return [w for w in jieba.lcut(text) if any(ch.isalnum() or ord(ch) >= _EMOJI_START for ch in w)]


def load_taxonomy(path: Path | str = TAXONOMY_PATH) -> Taxonomy:
    """Read and validate the taxonomy YAML."""
    with Path(path).open(encoding="utf-8") as source:
        return parse_taxonomy(yaml.safe_load(source))


def load_corpus(path: Path | str = CORPUS_PATH, split: str | None = None) -> list[dict]:
    """Labelled reports of the training corpus, optionally one split (all are "train" now; the
    held-out set is a separate frozen file, see evaluate.py)."""
    with Path(path).open(encoding="utf-8") as source:
        records = [json.loads(line) for line in source if line.strip()]
    return [r for r in records if split is None or r["split"] == split]


@dataclass(frozen=True)
class ModelConfig:
    """Features and estimator of the category model; chosen by cross-validation on the training
    corpus (evaluate --dev), part of the model version."""

    c: float = 100.0
    char_ngrams: tuple[int, int] = (1, 3)
    char_min_df: int = 2
    # Weight of a hand-written training report against a generated one.
    handwritten_weight: float = 3.0
    class_weight: str | None = None
    # The urgency head: a binary logistic regression on the same features (urgent vs general).
    urgency_c: float = 10.0

    def describe(self) -> str:
        """Stable text of the configuration (part of the model version)."""
        return (
            f"tfidf(jieba words)+tfidf(char {self.char_ngrams[0]}-{self.char_ngrams[1]}, min_df={self.char_min_df})"
            f"+logreg(C={self.c}, class_weight={self.class_weight})+urgency-logreg(C={self.urgency_c})"
            f"+handwritten_weight={self.handwritten_weight}"
        )


DEFAULT_CONFIG = ModelConfig()


class TextModel:
    """A fitted category model over report texts, with an urgency head on the same features."""

    def __init__(self, pipeline: Pipeline, version: str, urgency: LogisticRegression | None = None):
        self.pipeline = pipeline
        self.version = version
        if urgency is not None:
            urgent_column = list(urgency.classes_).index(True)
            sign = 1.0 if urgent_column == 1 else -1.0
            self._urgency_coef = sign * urgency.coef_.ravel()
            self._urgency_intercept = sign * float(urgency.intercept_[0])
        else:
            self._urgency_coef = None
            self._urgency_intercept = 0.0
        self._classes = [Category(c) for c in pipeline.classes_]
        estimator = pipeline.named_steps["model"]
        self._coef = estimator.coef_
        self._coef_by_feature = np.ascontiguousarray(estimator.coef_.T)
        self._intercept = estimator.intercept_
        self._feature_names = pipeline.named_steps["features"].get_feature_names_out()
        # The fitted vectorizers, unrolled: analyzer, vocabulary, idf and column offset of each.
        # Applying them by hand costs a fraction of sklearn's transform, whose input validation
        # dominates for one short text; test_classification_pipeline checks both agree.
        self._vectorizers = []
        offset = 0
        for _, vectorizer in pipeline.named_steps["features"].transformer_list:
            if not (vectorizer.sublinear_tf and vectorizer.norm == "l2" and vectorizer.use_idf):
                raise ValueError("the fast path assumes sublinear tf, idf and l2 norm")
            self._vectorizers.append((vectorizer.build_analyzer(), vectorizer.vocabulary_, vectorizer.idf_, offset))
            offset += len(vectorizer.vocabulary_)

    def features(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """The TF-IDF row of a normalised text as (column indices, values), like the pipeline's."""
        indices, values = [], []
        for analyze, vocabulary, idf, offset in self._vectorizers:
            counts: dict[int, int] = {}
            for token in analyze(text):
                column = vocabulary.get(token)
                if column is not None:
                    counts[column] = counts.get(column, 0) + 1
            if not counts:
                continue
            columns = np.fromiter(counts.keys(), dtype=np.intp, count=len(counts))
            weights = (np.log(np.fromiter(counts.values(), dtype=float, count=len(counts))) + 1.0) * idf[columns]
            weights /= np.sqrt(weights @ weights)
            indices.append(columns + offset)
            values.append(weights)
        if not indices:
            return np.empty(0, dtype=np.intp), np.empty(0)
        return np.concatenate(indices), np.concatenate(values)

    @classmethod
    def fit(cls, records: list[dict], config: ModelConfig = DEFAULT_CONFIG) -> TextModel:
        """Train on labelled records ({text, category}); never pass a held-out set here."""
        features = FeatureUnion(
            [
                ("words", TfidfVectorizer(analyzer=words, sublinear_tf=True)),
                (
                    "chars",
                    TfidfVectorizer(
                        analyzer="char_wb", ngram_range=config.char_ngrams, sublinear_tf=True, min_df=config.char_min_df
                    ),
                ),
            ]
        )
        estimator = LogisticRegression(C=config.c, max_iter=5000, class_weight=config.class_weight)
        pipeline = Pipeline([("features", features), ("model", estimator)])
        texts = [normalise(r["text"]) for r in records]
        weights = [
            config.handwritten_weight if str(r.get("template", "")).startswith("hand/") else 1.0 for r in records
        ]
        pipeline.fit(texts, [r["category"] for r in records], model__sample_weight=weights)
        urgency = None
        labels = [r.get("urgency") == "urgent" for r in records]
        if "urgency" in records[0] and len(set(labels)) == 2:
            matrix = pipeline.named_steps["features"].transform(texts)
            urgency = LogisticRegression(C=config.urgency_c, max_iter=5000).fit(matrix, labels, sample_weight=weights)
        return cls(pipeline, model_version(records, config), urgency)

    def predict(self, text: str) -> ModelOpinion:
        """Category probabilities for a normalised text, the features that pushed the winner, and
        the urgency head's probability that the report is urgent."""
        columns, values = self.features(text)
        scores = values @ self._coef_by_feature[columns] + self._intercept
        probabilities = softmax(scores)
        best = int(np.argmax(probabilities))
        contributions = values * self._coef[best, columns]
        order = np.argsort(-contributions)[:TOP_FEATURES]
        top = tuple(str(self._feature_names[columns[i]]) for i in order if contributions[i] > 0)
        urgent = None
        if self._urgency_coef is not None:
            urgent = float(expit(float(values @ self._urgency_coef[columns]) + self._urgency_intercept))
        return ModelOpinion(
            probabilities={c: float(p) for c, p in zip(self._classes, probabilities, strict=True)},
            top_features=top,
            urgent_probability=urgent,
        )


def model_version(records: list[dict], config: ModelConfig = DEFAULT_CONFIG) -> str:
    """Stable version of a model: hash of its training data, configuration, code and library."""
    digest = hashlib.sha256(f"{config.describe()}|sklearn {sklearn.__version__.rsplit('.', 1)[0]}".encode())
    digest.update(_MODEL_SOURCE)
    for r in records:
        digest.update(f"{r['text']}\t{r['category']}\n".encode())
    return "model-" + digest.hexdigest()[:10]


@lru_cache(maxsize=4)
def trained_model(corpus_path: str = str(CORPUS_PATH)) -> TextModel:
    """The model fitted on the training split of a corpus (fitted once per process)."""
    return TextModel.fit(load_corpus(corpus_path, split="train"))


def load_classifier(
    taxonomy_path: Path | str = TAXONOMY_PATH,
    corpus_path: Path | str = CORPUS_PATH,
    review_threshold: float = 0.6,
    use_model: bool = True,
) -> Classifier:
    """The production classifier: taxonomy rules plus the model refitted from the corpus."""
    model = trained_model(str(corpus_path)) if use_model else None
    return Classifier(load_taxonomy(taxonomy_path), model, review_threshold)
