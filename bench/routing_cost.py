"""Cost of one routing decision on the demo city: whistle plan (responsibility list + roster) and handoffs.

    .venv/bin/python -m bench.routing_cost [--n 10000] [--seed 7]

Pure domain work only (no database, no broker): for random grids x categories x instants over a
week (so the roster has off-duty officers replaced by teammates), plan the whistle and build its handoffs.
Prints one JSON line: {"bench": "routing", "variant": "decision", "n", "p50", "p99", "max"} in ms.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from datetime import UTC, datetime, timedelta

from bench.harness import Result, versions
from contracts.deadline_policy import DEFAULT_POLICY
from contracts.reference import demo_city
from contracts.vocabulary import Category, DeadlineKind, Urgency
from services.routing import domain
from services.routing.domain import RoutingIndex

WEEK_START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday


def decide(index: RoutingIndex, incident_id: str, grid_id: str, category: Category, urgency: Urgency,
           now: datetime) -> tuple[list[domain.Handoff], int]:
    """One whistle's routing decision: who is summoned, each with its own handoff and report deadline."""
    due = now + DEFAULT_POLICY.duration(DeadlineKind.REPORT, urgency, category)
    plan = domain.plan_whistle(index, grid_id, category, now)
    handoffs = [
        domain.dispatch(incident_id, summons, category=category, urgency=urgency, grid_id=grid_id,
                        dispatched_at=now, report_due_at=due, sequence="whistle")
        for summons in plan
    ]
    return handoffs, sum(1 for s in plan if s.stands_in_for)


def percentile(sorted_values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    return sorted_values[min(len(sorted_values) - 1, int(fraction * len(sorted_values)))]


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Measure and print the JSON line; returns it as a dict."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=1_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    city = demo_city()
    index = RoutingIndex(city)
    grid_ids = [g.id for g in city.grids] + ["G-UNKNOWN"]  # one fallback path in the mix
    categories = list(Category)
    cases = [
        (f"inc-{i}", rng.choice(grid_ids), rng.choice(categories), rng.choice(list(Urgency)),
         WEEK_START + timedelta(seconds=rng.randrange(7 * 24 * 3600)))
        for i in range(args.warmup + args.n)
    ]
    for case in cases[: args.warmup]:
        decide(index, *case)
    samples: list[float] = []
    # CPU time of this thread as well: on a shared machine the wall-clock tail is mostly waiting for a core.
    cpu_samples: list[float] = []
    stand_ins = 0
    for case in cases[args.warmup:]:
        started, cpu_started = time.perf_counter_ns(), time.thread_time_ns()
        _, replaced = decide(index, *case)
        samples.append((time.perf_counter_ns() - started) / 1e6)
        cpu_samples.append((time.thread_time_ns() - cpu_started) / 1e6)
        stand_ins += replaced
    samples.sort()
    cpu_samples.sort()
    line = {
        "bench": "routing", "variant": "decision", "n": args.n,
        "p50": round(percentile(samples, 0.50), 4), "p99": round(percentile(samples, 0.99), 4),
        "max": round(samples[-1], 4), "unit": "ms",
        "cpu_p50": round(percentile(cpu_samples, 0.50), 4), "cpu_p99": round(percentile(cpu_samples, 0.99), 4),
        "roster_stand_ins": stand_ins,
    }
    print(json.dumps(line))
    return line


def run(infra: object, profile: str) -> list[Result]:
    """The registry's entry (`make bench`): the decision cost as a Result; no broker or database needed."""
    n = 10_000 if profile == "short" else 100_000
    line = main(["--n", str(n)])
    return [Result(bench="routing", variant="decision (domain only)", n=n, seconds=0.0, p50=line["p50"], p99=line["p99"],
                   max=line["max"], versions=versions(), note=f"cpu p99 {line['cpu_p99']} ms; goal none set")]


if __name__ == "__main__":
    main()
