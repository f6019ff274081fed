"""Run the registered benchmarks: python -m bench [--profile short|long] [--only NAME ...].

A benchmark is a module with `run(infra, profile) -> list[Result]`; add it to BENCHMARKS.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from bench.harness import Result, infrastructure, write_results

# name -> module; each module's run(infra, profile) returns its results.
BENCHMARKS: dict[str, str] = {
    "sla_timer": "bench.sla_timer",
    "pipeline": "bench.pipeline",
    "classification_cost": "bench.classification_cost",
    "routing_cost": "bench.routing_cost",
}
PROFILES = ("short", "long")


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks on one shared broker and database server; write the results."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--profile", choices=PROFILES, default="short")
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHMARKS), default=None)
    args = parser.parse_args(argv)
    selected = args.only or list(BENCHMARKS)
    results: list[Result] = []
    with infrastructure() as infra:
        for name in selected:
            module = importlib.import_module(BENCHMARKS[name])
            print(f"[bench] {name} ({args.profile} profile)", flush=True)
            results += module.run(infra, args.profile)
            write_results(results)  # keep what was measured even if a later benchmark fails
    summary = write_results(results)
    print(summary.read_text(encoding="utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
