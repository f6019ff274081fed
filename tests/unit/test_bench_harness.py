"""The benchmark harness's pure checks: a run with a lost or doubled message must not count."""

from bench.harness import intended_send_times, sequence_check, sequence_failures


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
