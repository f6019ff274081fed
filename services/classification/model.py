"""The statistical category model and the loading of classification data (taxonomy, corpus).

Decision: the model is NOT a pickled artefact. It is refitted at start from the training split of
the shipped corpus (data/corpus.jsonl), which takes about a second, so there is no binary to
drift from the code or the library version, and nothing to unpickle. Its version is a hash of
the training data and the model configuration, so the same corpus always yields the same
version, and any change to either yields a new one.

Features: TF-IDF over jieba words (Chinese has no word spaces; jieba ships its dictionary) plus
TF-IDF over character 1-3-grams (robust to typos and to words jieba does not know), fed to a
multinomial logistic regression whose probabilities are the model's confidence.
"""

from __future__ import annotations

import hashlib
import json
import logging
from functools import lru_cache
from pathlib import Path

import jieba
import numpy as np
import sklearn
import yaml
from scipy import sparse
from scipy.special import softmax
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline

from contracts.vocabulary import Category
from services.classification.domain import Classifier, ModelOpinion, Taxonomy, normalise, parse_taxonomy

DATA_DIR = Path(__file__).parent / "data"
TAXONOMY_PATH = DATA_DIR / "taxonomy.yaml"
CORPUS_PATH = DATA_DIR / "corpus.jsonl"
# Part of the model version: change it whenever the features or the estimator change.
MODEL_CONFIG = "tfidf(jieba words)+tfidf(char 1-3)+logreg(C=100)"
TOP_FEATURES = 3
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
    """Labelled reports of the corpus, optionally one split ("train" or "heldout")."""
    with Path(path).open(encoding="utf-8") as source:
        records = [json.loads(line) for line in source if line.strip()]
    return [r for r in records if split is None or r["split"] == split]


class TextModel:
    """A fitted category model over report texts."""

    def __init__(self, pipeline: Pipeline, version: str):
        self.pipeline = pipeline
        self.version = version
        self._classes = [Category(c) for c in pipeline.classes_]
        self._coef = pipeline.named_steps["model"].coef_
        self._intercept = pipeline.named_steps["model"].intercept_
        self._vectorizers = [vectorizer for _, vectorizer in pipeline.named_steps["features"].transformer_list]
        self._feature_names = pipeline.named_steps["features"].get_feature_names_out()

    @classmethod
    def fit(cls, records: list[dict]) -> TextModel:
        """Train on labelled records ({text, category}); never pass the held-out split here."""
        features = FeatureUnion(
            [
                ("words", TfidfVectorizer(analyzer=words, sublinear_tf=True)),
                ("chars", TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), sublinear_tf=True, min_df=2)),
            ]
        )
        pipeline = Pipeline([("features", features), ("model", LogisticRegression(C=100, max_iter=3000))])
        texts = [normalise(r["text"]) for r in records]
        pipeline.fit(texts, [r["category"] for r in records])
        return cls(pipeline, model_version(records))

    def predict(self, text: str) -> ModelOpinion:
        """Category probabilities for a normalised text, and the features that pushed the winner."""
        # One report at a time: sklearn's per-call validation and FeatureUnion's joblib dispatch
        # cost more than the maths, so the union is applied by hand with validation off.
        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
            row = sparse.hstack([vectorizer.transform([text]) for vectorizer in self._vectorizers], format="csr")
            scores = row @ self._coef.T + self._intercept
        probabilities = softmax(np.asarray(scores).ravel())
        best = int(np.argmax(probabilities))
        contributions = row.data * self._coef[best, row.indices]
        order = np.argsort(-contributions)[:TOP_FEATURES]
        top = tuple(str(self._feature_names[row.indices[i]]) for i in order if contributions[i] > 0)
        return ModelOpinion(
            probabilities={c: float(p) for c, p in zip(self._classes, probabilities, strict=True)},
            top_features=top,
        )


def model_version(records: list[dict]) -> str:
    """Stable version of a model: hash of its training data, configuration and library."""
    digest = hashlib.sha256(f"{MODEL_CONFIG}|sklearn {sklearn.__version__.rsplit('.', 1)[0]}".encode())
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
