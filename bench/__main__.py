"""Run the registered benchmarks: python -m bench [--profile short|long] [--only NAME ...] [--skip NAME ...].

A benchmark is a module with `run(infra, profile) -> list[Result]`; add it to BENCHMARKS.
The run fails (exit 1) when a benchmark finds a correctness failure (a lost, doubled or unknown
message) or crashes; a missed performance goal is reported in the summary, never fails the run.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import time
import traceback

from bench.harness import CorrectnessError, Result, infrastructure, write_results

# name -> module; each module's run(infra, profile) returns its results.
BENCHMARKS: dict[str, str] = {
    "sla_timer": "bench.sla_timer",
    "pipeline": "bench.pipeline",
    "runtime_paths": "bench.runtime_paths",
    "classification_cost": "bench.classification_cost",
    "routing_cost": "bench.routing_cost",
    # Optional: needs Debian chromium + chromium-driver, skips with a message (no result) without them.
    "console_render": "bench.console_render",
}
PROFILES = ("short", "long")
# The whole run is stopped after this long (a hang must not outlive CI); the processes it started are stopped.
DEADLINE_MINUTES = {"short": 45, "long": 240}


class BenchDeadline(KeyboardInterrupt):
    """The run took longer than its deadline (an interrupt: neither `except Exception` nor asyncio swallows it)."""


def _deadline(signum: int, frame: object) -> None:
    raise BenchDeadline()


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks on one shared broker and database server; write the results."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--profile", choices=PROFILES, default="short")
    parser.add_argument("--only", nargs="*", choices=sorted(BENCHMARKS), default=None)
    parser.add_argument("--skip", nargs="*", choices=sorted(BENCHMARKS), default=[])
    parser.add_argument("--deadline-minutes", type=float, default=None,
                        help="stop the run after this long (default: 45 short, 240 long)")
    args = parser.parse_args(argv)
    selected = [name for name in (args.only or list(BENCHMARKS)) if name not in args.skip]
    results: list[Result] = []
    failures: list[str] = []
    minutes = args.deadline_minutes or DEADLINE_MINUTES[args.profile]
    signal.signal(signal.SIGALRM, _deadline)
    signal.alarm(max(1, int(minutes * 60)))
    started = time.monotonic()
    try:
        with infrastructure() as infra:
            for name in selected:
                module = importlib.import_module(BENCHMARKS[name])
                print(f"[bench] {name} ({args.profile} profile)", flush=True)
                began = time.monotonic()
                try:
                    results += module.run(infra, args.profile)
                except CorrectnessError as error:
                    results += error.results
                    failures += [f"{name}: {f}" for f in error.failures]
                    print(f"[bench] {name} FAILED: {error}", flush=True)
                except Exception as error:  # noqa: BLE001 - one crashed benchmark must not hide the others
                    traceback.print_exc()
                    failures.append(f"{name}: crashed: {error!r}"[:500])
                print(f"[bench] {name} took {time.monotonic() - began:.0f} s", flush=True)
                write_results(results, failures=failures)  # keep what was measured even if a later one fails
    except BenchDeadline:
        failures.append(f"the run exceeded its deadline of {minutes:g} minutes and was stopped")
        print(f"[bench] deadline of {minutes:g} minutes exceeded; stopped", flush=True)
    finally:
        signal.alarm(0)
    summary = write_results(results, failures=failures)
    print(summary.read_text(encoding="utf-8"))
    print(f"[bench] {len(selected)} benchmark(s) in {time.monotonic() - started:.0f} s; "
          f"{'FAILED: ' + '; '.join(failures) if failures else 'no correctness failure'}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
