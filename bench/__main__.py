"""Run the registered benchmarks: python -m bench [--profile short|long] [--only NAME ...] [--skip NAME ...].

A benchmark is a module with `run(infra, profile) -> list[Result]`; add it to BENCHMARKS.
The run fails (exit 1) when a benchmark finds a correctness failure (a lost, doubled or unknown
message) or crashes; a missed performance goal is reported in the summary, never fails the run.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import shutil
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

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


# What the hard stop needs: the results so far, the failures, the infrastructure.
_STATE: dict[str, object] = {}
# After the deadline, how long the graceful stop may take before the hard one.
GRACE_SECONDS = 180


def _hard_stop(minutes: float) -> None:
    """The graceful stop did not finish: write what was measured, kill every child, stop PostgreSQL, exit 1.

    Runs in a watchdog thread, so it works whatever the main thread is stuck in (e.g. cancelling
    a thousand pending HTTP requests). The children were started in their own sessions.
    """
    results = _STATE.get("results", [])
    failures = [*_STATE.get("failures", []), f"the run exceeded its deadline of {minutes:g} minutes and was killed"]
    try:
        print(write_results(results, failures=failures).read_text(encoding="utf-8"), flush=True)  # type: ignore[arg-type]
    finally:
        me = os.getpid()
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) != me:
                    continue
                if int(fields[2]) == pid:  # its own process group (session leader)
                    os.killpg(pid, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
            except (OSError, ValueError, IndexError):
                continue
        infra = _STATE.get("infra")
        if infra is not None and getattr(infra, "postgres", None) is not None:
            with contextlib.suppress(Exception):
                infra.postgres.kill()  # type: ignore[union-attr]
                infra.postgres.cleanup()  # type: ignore[union-attr]
        if infra is not None and getattr(infra, "work_dir", None) is not None:
            shutil.rmtree(infra.work_dir, ignore_errors=True)  # type: ignore[union-attr]
        print(f"[bench] deadline of {minutes:g} minutes exceeded, graceful stop took over {GRACE_SECONDS} s: killed",
              flush=True)
        os._exit(1)


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
    _STATE.update(results=results, failures=failures)
    signal.signal(signal.SIGALRM, _deadline)
    signal.alarm(max(1, int(minutes * 60)))
    watchdog = threading.Timer(minutes * 60 + GRACE_SECONDS, _hard_stop, args=(minutes,))
    watchdog.daemon = True
    watchdog.start()
    started = time.monotonic()
    try:
        with infrastructure() as infra:
            _STATE["infra"] = infra
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
        watchdog.cancel()
    summary = write_results(results, failures=failures)
    print(summary.read_text(encoding="utf-8"))
    print(f"[bench] {len(selected)} benchmark(s) in {time.monotonic() - started:.0f} s; "
          f"{'FAILED: ' + '; '.join(failures) if failures else 'no correctness failure'}", flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
