"""Per-incident classification cost: `python bench/classification_cost.py [--n 5000]`.

Classifies training-corpus texts one at a time through the production pipeline (taxonomy rules +
model), after a warm-up, and prints one JSON line per variant with p50/p99/max in milliseconds of
wall-clock time, and the same of the calling thread's CPU time (`cpu_*`). On a shared machine the
wall-clock tail is mostly time the process spent descheduled (a busy neighbour), which the CPU
time excludes; both are reported. Goal: pipeline p99 < 5 ms. Not part of `make test` (timings
belong here, not in tests).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import Result, versions  # noqa: E402
from services.classification.domain import Classifier  # noqa: E402
from services.classification.model import load_classifier, load_corpus  # noqa: E402


def _summary(samples: list[float], prefix: str = "") -> dict:
    samples = sorted(samples)
    n = len(samples)
    return {
        f"{prefix}p50": round(statistics.median(samples), 3),
        f"{prefix}p99": round(samples[int(0.99 * (n - 1))], 3),
        f"{prefix}max": round(samples[-1], 3),
        f"{prefix}mean": round(statistics.fmean(samples), 3),
    }


def measure(classifier: Classifier, texts: list[str], n: int, warmup: int) -> dict:
    """Time n single-report classifications after a warm-up: wall clock and thread CPU time."""
    for text in itertools.islice(itertools.cycle(texts), warmup):
        classifier.classify(text)
    wall, cpu = [], []
    for text in itertools.islice(itertools.cycle(texts), n):
        start, start_cpu = time.perf_counter_ns(), time.thread_time_ns()
        classifier.classify(text)
        cpu.append((time.thread_time_ns() - start_cpu) / 1e6)
        wall.append((time.perf_counter_ns() - start) / 1e6)
    return {"n": n, **_summary(wall), **_summary(cpu, "cpu_"), "unit": "ms"}


def _load() -> str:
    try:
        return f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cpus"
    except OSError:
        return "unknown"


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
            result |= {"startup_fit_s": startup, "classifier_version": pipeline.version, "load_avg_1m": _load()}
        print(json.dumps(result), flush=True)


def run(infra: object, profile: str) -> list[Result]:
    """The registry's entry (`make bench`): wall-clock and CPU-time figures per variant."""
    n = 2_000 if profile == "short" else 20_000
    texts = [r["text"] for r in load_corpus()]
    pipeline = load_classifier()
    results = []
    for variant, classifier in (("pipeline", pipeline), ("rules-only", Classifier(pipeline.taxonomy))):
        line = measure(classifier, texts, n, warmup=200)
        note = f"load {_load()}"
        results.append(Result(bench="classification", variant=variant, n=n, seconds=0.0, p50=line["p50"], p99=line["p99"],
                              max=line["max"], versions=versions(), note=note))
        results.append(Result(bench="classification", variant=f"{variant} (thread cpu time)", n=n, seconds=0.0,
                              p50=line["cpu_p50"], p99=line["cpu_p99"], max=line["cpu_max"], versions=versions(),
                              note=note, goal="p99 < 5 ms" if variant == "pipeline" else "none set"))
    return results


if __name__ == "__main__":
    main()
