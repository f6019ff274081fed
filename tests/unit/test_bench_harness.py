"""The benchmark harness's pure checks: a run with a lost, doubled or unknown message must not count,
and every figure is judged against its goal."""

import asyncio

import pytest

from bench.harness import (
    NO_GOAL,
    Arrival,
    ArrivalLedger,
    CpuMeter,
    Result,
    apply_goals,
    arrival_checks,
    goal_met,
    intended_send_times,
    seq_of_keys,
    sequence_check,
    sequence_failures,
    write_results,
)


def test_sequence_check_accepts_every_number_once_in_any_order():
    checks = sequence_check([2, 0, 1, 3], sent=4)
    assert checks == {"gaps": 0, "duplicates": 0, "unexpected": 0}
    assert sequence_failures(checks) == []


def test_sequence_check_counts_missing_numbers_as_gaps():
    checks = sequence_check([0, 3], sent=4)
    assert checks["gaps"] == 2
    assert sequence_failures(checks) == ["gaps"]


def test_sequence_check_counts_every_extra_copy_as_a_duplicate():
    checks = sequence_check([0, 1, 1, 1, 2], sent=3)
    assert checks["duplicates"] == 2
    assert sequence_failures(checks) == ["duplicates"]


def test_sequence_check_flags_numbers_that_were_never_sent():
    checks = sequence_check([0, 1, 7], sent=2)
    assert checks["unexpected"] == 1
    assert sequence_failures(checks) == ["unexpected"]


def test_send_times_follow_the_fixed_rate_regardless_of_when_sends_happen():
    assert intended_send_times(10.0, rate=4, count=3) == [10.0, 10.25, 10.5]


# --- what arrived, not what was sent ------------------------------------------------------------


def arrival(key: str, event_id: str | None = None, identity: str | None = None) -> Arrival:
    return Arrival(key, identity or key, event_id or f"ev-{key}", 0.0)


def test_arrivals_of_every_sent_message_once_pass():
    seq_of = {"t-0": 0, "t-1": 1}
    checks = arrival_checks([arrival("t-1"), arrival("t-0")], seq_of, ArrivalLedger())
    assert checks == {"gaps": 0, "duplicates": 0, "duplicate_records": 0, "unexpected": 0}
    assert sequence_failures(checks) == []


def test_a_second_event_for_one_message_is_a_duplicate_and_fails():
    seq_of = {"t-0": 0, "t-1": 1}
    checks = arrival_checks([arrival("t-0"), arrival("t-1"), arrival("t-1", "ev-again")], seq_of, ArrivalLedger())
    assert checks["duplicates"] == 1
    assert sequence_failures(checks) == ["duplicates"]


def test_a_second_copy_of_one_event_is_a_duplicate_record_and_fails():
    checks = arrival_checks([arrival("t-0"), arrival("t-0")], {"t-0": 0}, ArrivalLedger())
    assert checks["duplicate_records"] == 1
    assert sequence_failures(checks) == ["duplicate_records"]


def test_a_key_nobody_sent_is_unexpected_and_fails():
    checks = arrival_checks([arrival("t-0"), arrival("t-9")], {"t-0": 0}, ArrivalLedger())
    assert checks["unexpected"] == 1
    assert sequence_failures(checks) == ["unexpected"]


def test_a_message_that_never_arrived_is_a_gap():
    checks = arrival_checks([arrival("t-0")], {"t-0": 0, "t-1": 1}, ArrivalLedger())
    assert checks["gaps"] == 1


def test_several_messages_of_one_key_are_no_duplicate_when_their_identities_differ():
    # One incident arms a deadline per summoned unit: two DeadlineArmed, one sequence number.
    arrivals = [arrival("t-0", "e1", "deadline:a"), arrival("t-0", "e2", "deadline:b")]
    assert sequence_failures(arrival_checks(arrivals, {"t-0": 0}, ArrivalLedger())) == []


def test_a_late_arrival_of_an_earlier_run_is_no_stranger_but_its_copy_is_a_duplicate():
    ledger = ArrivalLedger()
    assert sequence_failures(arrival_checks([arrival("a-0")], {"a-0": 0}, ledger)) == []
    # The next run sees the earlier run's key again: a new event for the same message.
    checks = arrival_checks([arrival("b-0"), arrival("a-0", "ev-late")], {"b-0": 0}, ledger)
    assert checks["unexpected"] == 0
    assert checks["duplicates"] == 1


def test_sequence_numbers_are_read_from_the_tagged_keys_only():
    assert seq_of_keys(["x-0000003", "x-0000000", "y-0000001", "x-abc"], "x") == {"x-0000003": 3, "x-0000000": 0}


class FakeWatcher:
    """Delivers each sent key at once, plus whatever the test adds: the watcher's interface of measure()."""

    topic = "fake"

    def __init__(self, extra: list[Arrival]) -> None:
        self.first_seen: dict[str, float] = {}
        self.arrivals: list[Arrival] = []
        self.ledger = ArrivalLedger()
        self.checked = 0
        self.extra = extra

    def deliver(self, key: str) -> None:
        self.arrivals.append(arrival(key))
        self.first_seen.setdefault(key, 0.0)

    async def wait_for(self, keys: list[str], timeout: float, idle: float | None = None) -> None:
        self.arrivals += self.extra

    def check(self, seq_of: dict[str, int]) -> dict[str, int]:
        arrivals, self.checked = self.arrivals[self.checked:], len(self.arrivals)
        return arrival_checks(arrivals, seq_of, self.ledger)


@pytest.mark.parametrize(
    ("extra", "failed"),
    [([], []), ([arrival("run-0000001", "ev-second")], ["duplicates"]), ([arrival("stranger-0")], ["unexpected"])],
)
def test_the_pipeline_measurement_counts_what_arrived(extra, failed):
    from bench.pipeline import measure

    watcher = FakeWatcher(extra)

    async def send(i: int) -> str:
        key = f"run-{i:07d}"
        watcher.deliver(key)
        return key

    meter = CpuMeter(None, dict)
    sample = asyncio.run(measure(1000, 3, 0, send, watcher, meter, ()))
    assert sample.failures == failed
    assert sample.checks["send_errors"] == 0


# --- goals --------------------------------------------------------------------------------------


def row(**values) -> Result:
    return Result(bench="b", variant="v", n=1, seconds=1.0, **values)


def test_a_goal_is_met_only_when_every_condition_holds():
    assert goal_met(row(p99=9.0, ratio=2.0), "p99 <= 10 ms; ratio <= 3") is True
    assert goal_met(row(p99=11.0, ratio=2.0), "p99 <= 10 ms; ratio <= 3") is False
    assert goal_met(row(rate=5_000.0), "rate >= 5,000 /s") is True


def test_a_goal_can_name_a_check_and_is_unjudged_without_the_figure():
    assert goal_met(row(checks={"commits_per_1000": 12.0}), "commits_per_1000 <= 100") is True
    assert goal_met(row(checks={"commits_per_1000": 1000.0}), "commits_per_1000 <= 100") is False
    assert goal_met(row(), "p99 <= 10 ms") is None
    assert goal_met(row(p99=1.0), "none (baseline)") is None


def test_figures_without_a_goal_say_so_and_known_figures_get_theirs():
    plain, classified = row(), Result(bench="classification", variant="pipeline", n=1, seconds=0.0, p99=7.0)
    apply_goals([plain, classified])
    assert plain.goal == NO_GOAL and plain.goal_met is None
    assert classified.goal == "p99 < 5 ms" and classified.goal_met is False


def test_the_summary_lists_missed_goals_and_failures_first(tmp_path):
    results = [row(p99=20.0, goal="p99 <= 10 ms"), Result(bench="b", variant="fine", n=1, seconds=1.0, p99=1.0,
                                                          goal="p99 <= 10 ms")]
    summary = write_results(results, tmp_path, failures=["pipeline: gaps"]).read_text()
    failed_at, missed_at, table_at = summary.index("FAILED"), summary.index("Goals missed: 1 of 2"), summary.index("| bench")
    assert failed_at < missed_at < table_at
    assert "**b / v**" in summary and "**MISSED**" in summary


def test_cpu_per_process_counts_a_restarted_process_from_zero():
    before = {("intake", 10): 5.0, ("kafka", 1): 100.0}
    after = {("intake", 11): 2.0, ("kafka", 1): 103.5}
    assert CpuMeter.delta(before, after) == {"intake": 2.0, "kafka": 3.5}
