"""`make run`'s stack (python -m infra.devstack), driven with the README's own commands.

The README's report example is read out of README.md and run as written (only the ports move,
so this stack can run beside a developer's own); the stack must show the incident dispatched,
stop on Ctrl-C leaving no process behind, and start a second time on the same state.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from infra.devstack import SERVICES
from infra.local import REPO_ROOT, ensure_kafka_jars, free_port, port_open
from tests._infra import unavailable
from tests.support import pids_mentioning

# Two whole stacks one after the other, each starting its own broker: minutes on a busy machine.
pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(1200)]

README = REPO_ROOT / "README.md"
BANNER = "gridwhistle dev stack is up"


def readme_report_example() -> str:
    """The shell block of the README that takes a token and reports an incident."""
    text = README.read_text(encoding="utf-8")
    start = text.index("take a token")
    block = re.search(r"```sh\n(.*?)```", text[start:], re.S)
    assert block, "README lost its report example"
    return block.group(1)


def free_offset() -> int:
    """A shift of the stack's HTTP ports under which all of them are free."""
    for _ in range(50):
        offset = random.randrange(20_000, 40_000, 10)
        if not any(port_open("127.0.0.1", port + offset, timeout=0.1) for _, port in SERVICES):
            return offset
    raise RuntimeError("no free port range for a second dev stack")


class DevStack:
    """One `python -m infra.devstack` process with its output collected."""

    def __init__(self, run_dir: Path, offset: int, kafka_port: int) -> None:
        env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_BOOTSTRAP_SERVERS", "GW_TOPIC_PREFIX")}
        env.update(
            GRIDWHISTLE_RUN_DIR=str(run_dir),
            GRIDWHISTLE_PORT_OFFSET=str(offset),
            GRIDWHISTLE_KAFKA_PORT=str(kafka_port),
            PYTHONUNBUFFERED="1",
        )
        self.output: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "infra.devstack"],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line.rstrip("\n"))

    def text(self) -> str:
        return "\n".join(self.output)

    def wait_up(self, timeout: float = 480) -> None:
        deadline = time.monotonic() + timeout
        while BANNER not in self.text():
            if self.proc.poll() is not None:
                raise AssertionError(f"the dev stack exited with {self.proc.returncode}:\n{self.text()[-4000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the dev stack was not up within {timeout:.0f}s:\n{self.text()[-4000:]}")
            time.sleep(0.2)

    def child_pids(self) -> set[int]:
        return {int(pid) for pid in re.findall(r"\(pid (\d+)\)", self.text())}

    def interrupt(self, timeout: float = 90) -> int:
        """Ctrl-C, as a terminal would send it; the exit code."""
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._reader.join(timeout=5)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") < 0


def run_readme_example(offset: int) -> str:
    """Run the README's block with the intake port moved; the POST's answer."""
    block = readme_report_example().replace("127.0.0.1:8000", f"127.0.0.1:{8000 + offset}")
    post = block[: block.index("# →")]  # the token and the POST, exactly as written
    result = subprocess.run(["bash", "-ec", post], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def readme_get(offset: int, incident_id: str) -> str:
    block = readme_report_example().replace("127.0.0.1:8000", f"127.0.0.1:{8000 + offset}")
    token_line = next(line for line in block.splitlines() if line.startswith("TOKEN="))
    get_line = next(line for line in block.splitlines() if line.startswith("curl -s -H"))
    script = f"{token_line}\n{get_line.replace('<incident_id>', incident_id)}"
    result = subprocess.run(["bash", "-ec", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def kafka_jars_ready() -> None:
    try:
        ensure_kafka_jars(os.environ.get("GRIDWHISTLE_KAFKA_VERSION", "4.4.0"))
    except Exception as exc:  # noqa: BLE001 - reported as the reason
        unavailable(f"the Kafka jars could not be fetched: {exc}")


def test_the_dev_stack_dispatches_the_readme_example_stops_cleanly_and_starts_again(tmp_path, kafka_jars_ready):
    import json

    run_dir = tmp_path / "run"
    offset, kafka_port = free_offset(), free_port()

    first = DevStack(run_dir, offset, kafka_port)
    try:
        first.wait_up()
        assert f"127.0.0.1:{8000 + offset}" in first.text() and "W0001" in first.text()
        answer = json.loads(run_readme_example(offset))
        incident_id = answer["incident_id"]
        assert answer["status"] == "reported"
        reported_at = time.monotonic()
        while True:
            view = json.loads(readme_get(offset, incident_id))
            if view["status"] == "dispatched" and len(view["handoffs"]) >= 2:
                break
            assert time.monotonic() - reported_at < 30, f"not dispatched: {view}"
            time.sleep(0.2)
        print(f"dispatched {time.monotonic() - reported_at:.2f}s after the README's POST answered")
        assert (view["category"], view["urgency"]) == ("violence", "urgent")
        children = first.child_pids()
        assert len(children) == len(SERVICES)
    finally:
        code = first.interrupt()
    assert code == 0, first.text()[-3000:]
    assert not [pid for pid in children if alive(pid)], "a service outlived Ctrl-C"
    assert [p for p in pids_mentioning(str(run_dir)) if alive(p)] == [], "the broker (or something else of the stack) outlived Ctrl-C"

    second = DevStack(run_dir, offset, kafka_port)
    try:
        second.wait_up()
        again = json.loads(readme_get(offset, incident_id))
        assert again["incident_id"] == incident_id and again["status"] == "dispatched"
        # The same Idempotency-Key and body answer with the same incident after the restart.
        assert json.loads(run_readme_example(offset))["incident_id"] == incident_id
    finally:
        assert second.interrupt() == 0, second.text()[-3000:]
    assert [p for p in pids_mentioning(str(run_dir)) if alive(p)] == []
