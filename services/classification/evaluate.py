"""Measure the classifier: `python -m services.classification.evaluate` (make eval-classifier).

Default: the production classifier (model fitted on the whole training corpus) scored on the
frozen hand-written held-out set v3 (data/heldout_v3.jsonl), which no tuning ever looks at; the
file's sha256 is checked first, so an edit cannot pass unnoticed. `--dev`: 5-fold cross-validation
over the training corpus with whole templates held out per fold (each hand-written report is its
own group), reported for the whole corpus and for its hand-written part; tune against that only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, recall_score
from sklearn.model_selection import GroupKFold

from contracts.vocabulary import Category
from services.classification.domain import Classifier, Decision
from services.classification.model import DEFAULT_CONFIG, ModelConfig, TextModel, load_classifier, load_corpus, load_taxonomy

# Held-out v3: written by hand, frozen. Its hash is checked on load, so an edit cannot go unnoticed.
HELDOUT_V3_PATH = Path(__file__).parent / "data" / "heldout_v3.jsonl"
HELDOUT_V3_SHA256 = "690471d0bbef3770a7e3d78ce2ef8aebcebec84b2cd2aeb93f181dc04533cb0a"

URGENT_RECALL_GOAL = 0.98
MACRO_F1_GOAL = 0.85
LABELS = [c.value for c in Category]
DEV_FOLDS = 5


@dataclass(frozen=True)
class Evaluation:
    """Quality of a classifier on a set of labelled reports."""

    split: str
    n: int
    accuracy: float
    macro_f1: float
    urgent_recall: float
    urgent_precision: float
    needs_review_share: float
    confusion: list[list[int]]
    classifier_version: str = ""

    def meets_goals(self) -> bool:
        """Urgent recall and category macro-F1 at or above the goals."""
        return self.urgent_recall >= URGENT_RECALL_GOAL and self.macro_f1 >= MACRO_F1_GOAL


def evaluate(classifier: Classifier, records: list[dict], split: str) -> Evaluation:
    """Classify every record and score categories and urgency against the labels."""
    decisions = [classifier.classify(r["text"]) for r in records]
    return score(records, decisions, split, classifier.version)


def score(records: list[dict], decisions: list[Decision], split: str, version: str = "") -> Evaluation:
    """Score decisions (one per record, same order) against the records' labels."""
    true_categories = [r["category"] for r in records]
    predicted_categories = [d.category.value for d in decisions]
    true_urgent = [r["urgency"] == "urgent" for r in records]
    predicted_urgent = [d.urgency.value == "urgent" for d in decisions]
    present = [label for label in LABELS if label in true_categories]
    return Evaluation(
        split=split,
        n=len(records),
        accuracy=round(accuracy_score(true_categories, predicted_categories), 4),
        macro_f1=round(f1_score(true_categories, predicted_categories, labels=present, average="macro"), 4),
        urgent_recall=round(recall_score(true_urgent, predicted_urgent, zero_division=0), 4),
        # precision of "urgent" = recall with the roles of truth and prediction swapped
        urgent_precision=round(recall_score(predicted_urgent, true_urgent, zero_division=0), 4),
        needs_review_share=round(sum(d.needs_review for d in decisions) / len(decisions), 4),
        confusion=confusion_matrix(true_categories, predicted_categories, labels=LABELS).tolist(),
        classifier_version=version,
    )


def load_heldout_v3(path: Path = HELDOUT_V3_PATH, sha256: str = HELDOUT_V3_SHA256) -> list[dict]:
    """The frozen hand-written held-out set; refuses a file whose hash is not the frozen one."""
    raw = Path(path).read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest != sha256:
        raise ValueError(f"{path} was edited: sha256 {digest} != frozen {sha256}")
    return [json.loads(line) for line in raw.decode("utf-8").splitlines() if line.strip()]


def evaluate_heldout() -> Evaluation:
    """The production classifier on held-out v3."""
    return evaluate(load_classifier(), load_heldout_v3(), "heldout-v3")


def dev_predictions(folds: int = DEV_FOLDS, config: ModelConfig = DEFAULT_CONFIG, model_weight: float | None = None) -> tuple[list[dict], list[Decision]]:
    """Template-grouped cross-validation on the training corpus: every record predicted by a model
    that never saw its template (for tuning; held-out v3 is never touched)."""
    records = load_corpus(split="train")
    taxonomy = load_taxonomy()
    weight = {} if model_weight is None else {"model_weight": model_weight}
    pooled: list[dict] = []
    decisions: list[Decision] = []
    for train_idx, test_idx in GroupKFold(n_splits=folds).split(records, groups=[r["template"] for r in records]):
        classifier = Classifier(taxonomy, TextModel.fit([records[i] for i in train_idx], config), **weight)
        fold = [records[i] for i in test_idx]
        pooled.extend(fold)
        decisions.extend(classifier.classify(r["text"]) for r in fold)
    return pooled, decisions


def evaluate_dev(folds: int = DEV_FOLDS) -> list[Evaluation]:
    """Cross-validation on the training corpus, whole and its hand-written part."""
    pooled, decisions = dev_predictions(folds)
    hand = [i for i, r in enumerate(pooled) if r["template"].startswith("hand/")]
    return [
        score(pooled, decisions, f"train-cv{folds}"),
        score([pooled[i] for i in hand], [decisions[i] for i in hand], f"train-cv{folds}-handwritten"),
    ]


def format_report(result: Evaluation) -> str:
    """Human-readable metrics and confusion matrix."""
    short = [label[:6] for label in LABELS]
    lines = [
        f"split={result.split} n={result.n} classifier={result.classifier_version or '(cross-validated)'}",
        f"accuracy={result.accuracy:.3f} macro_f1={result.macro_f1:.3f} (goal >= {MACRO_F1_GOAL})",
        f"urgent_recall={result.urgent_recall:.3f} (goal >= {URGENT_RECALL_GOAL}) "
        f"urgent_precision={result.urgent_precision:.3f} review_rate={result.needs_review_share:.3f}",
        "confusion (rows = true, columns = predicted):",
        " " * 18 + " ".join(f"{s:>6}" for s in short),
    ]
    lines += [f"{label:>17} " + " ".join(f"{v:>6}" for v in row) for label, row in zip(LABELS, result.confusion, strict=True)]
    lines.append(f"goals met: {result.meets_goals()}")
    return "\n".join(lines)


def main() -> None:
    """Print the evaluation as text and as one JSON line per result."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dev", action="store_true", help="template-grouped CV on the training corpus (tune on this)")
    args = parser.parse_args()
    results = evaluate_dev() if args.dev else [evaluate_heldout()]
    for result in results:
        print(format_report(result))
        print(json.dumps({k: v for k, v in asdict(result).items() if k != "confusion"}))


if __name__ == "__main__":
    main()
