"""Per-incident classification cost: `python bench/classification_cost.py [--n 5000]`.

Classifies corpus texts one at a time through the production pipeline (taxonomy rules + model),
after a warm-up, and prints one JSON line per variant with p50/p99/max in milliseconds.
Goal: pipeline p99 < 5 ms. Not part of `make test` (timings belong here, not in tests).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import Result, versions  # noqa: E402
from services.classification.domain import Classifier  # noqa: E402
from services.classification.model import load_classifier, load_corpus  # noqa: E402


def measure(classifier: Classifier, texts: list[str], n: int, warmup: int) -> dict:
    """Time n single-report classifications after a warm-up."""
    for text in itertools.islice(itertools.cycle(texts), warmup):
        classifier.classify(text)
    samples = []
    for text in itertools.islice(itertools.cycle(texts), n):
        start = time.perf_counter()
        classifier.classify(text)
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    return {
        "n": n,
        "p50": round(statistics.median(samples), 3),
        "p99": round(samples[int(0.99 * (n - 1))], 3),
        "max": round(samples[-1], 3),
        "mean": round(statistics.fmean(samples), 3),
        "unit": "ms",
    }


def main() -> None:
    """Print one JSON line per variant: the full pipeline and the rules alone."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()
    texts = [r["text"] for r in load_corpus()]
    start = time.perf_counter()
    pipeline = load_classifier()
    startup = round(time.perf_counter() - start, 3)
    for variant, classifier in (("pipeline", pipeline), ("rules-only", Classifier(pipeline.taxonomy))):
        result = {"bench": "classification", "variant": variant, **measure(classifier, texts, args.n, args.warmup)}
        if variant == "pipeline":
            result |= {"startup_fit_s": startup, "classifier_version": pipeline.version}
        print(json.dumps(result), flush=True)


def run(infra: object, profile: str) -> list[Result]:
    """The registry's entry (`make bench`): one Result per variant; no broker or database needed."""
    n = 2_000 if profile == "short" else 20_000
    texts = [r["text"] for r in load_corpus()]
    pipeline = load_classifier()
    results = []
    for variant, classifier in (("pipeline", pipeline), ("rules-only", Classifier(pipeline.taxonomy))):
        line = measure(classifier, texts, n, warmup=200)
        results.append(Result(bench="classification", variant=variant, n=n, seconds=0.0, p50=line["p50"], p99=line["p99"],
                              max=line["max"], versions=versions(), note="goal: pipeline p99 < 5 ms" if variant == "pipeline" else ""))
    return results


if __name__ == "__main__":
    main()
