"""Duty roster: weekly shifts in local time, and who routing summons when the grid officer is off duty."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
from pydantic import ValidationError

from contracts.reference import DutyRoster, ReferenceData, RosterEntry, Shift, demo_city, parse_days
from contracts.vocabulary import Category, HandoffRole, HandoffState, Urgency
from services.routing import domain
from services.routing.domain import RoutingIndex, plan_whistle

CITY = demo_city()
INDEX = RoutingIndex(CITY)
# Station S0101's first team takes 24-hour duties from 08:00: P0001 mon/thu/sun, P0013 tue/fri, P0025 wed/sat.
GRID = "G0001"  # officer P0001
SHANGHAI_THURSDAY_4PM = datetime(2026, 1, 1, 8, 0, tzinfo=UTC)  # 2026-01-01 is a Thursday


def at_shanghai(day: int, hour: int, minute: int = 0) -> datetime:
    """An instant given as Shanghai wall-clock time on 2026-01-<day> (the 5th is a Monday)."""
    return datetime(2026, 1, day, hour, minute, tzinfo=UTC) - timedelta(hours=8)


def with_roster(roster: DutyRoster | None) -> RoutingIndex:
    # A fresh model rather than model_copy: the reference data caches its lookups.
    return RoutingIndex(ReferenceData.model_validate({**dict(CITY), "roster": roster}))


def units(summons: list[domain.Summons]) -> list[tuple[str, HandoffRole]]:
    return [(s.unit_id, s.role) for s in summons]


def test_weekday_spellings_parse_to_the_same_days() -> None:
    assert parse_days("mon-fri") == ("mon", "tue", "wed", "thu", "fri")
    assert parse_days("fri-mon") == ("mon", "fri", "sat", "sun")
    assert parse_days("sat;mon") == parse_days(["mon", "sat"]) == ("mon", "sat")
    assert len(parse_days("daily")) == 7
    with pytest.raises(ValueError, match="unknown weekday"):
        parse_days("mon-someday")


def test_overnight_shift_covers_the_small_hours_of_the_next_day_only() -> None:
    night = Shift(days="fri", start=time(20), end=time(8))
    friday, saturday = datetime(2026, 1, 2), datetime(2026, 1, 3)
    assert night.covers(friday.replace(hour=21)) and night.covers(saturday.replace(hour=7, minute=59))
    assert not night.covers(saturday.replace(hour=8)) and not night.covers(saturday.replace(hour=21))
    assert not night.covers(friday.replace(hour=7))


def test_shifts_are_read_in_the_rosters_time_zone_not_utc() -> None:
    entry = CITY.roster_entry("U-POL-P0001")
    roster = CITY.roster
    # Read as UTC wall-clock time both answers would flip (Thursday 00:30 / Friday 00:30 UTC).
    assert entry.on_duty(roster.local(at_shanghai(1, 8, 30)))
    assert not entry.on_duty(roster.local(at_shanghai(2, 8, 30)))
    with pytest.raises(ValidationError, match="unknown time zone"):
        DutyRoster(version="x", timezone="Mars/Olympus")


def test_a_roster_entry_names_exactly_one_officer_or_unit() -> None:
    with pytest.raises(ValidationError, match="exactly one of officer_id or unit_id"):
        RosterEntry(officer_id="P0001", unit_id="U-POL-P0001", shifts=(Shift(days="daily", start=time(0), end=time(0)),))


def test_on_duty_grid_officer_is_summoned_as_usual() -> None:
    plan = plan_whistle(INDEX, GRID, Category.NEIGHBOUR_DISPUTE, SHANGHAI_THURSDAY_4PM)
    assert units(plan) == [("U-POL-P0001", HandoffRole.LEAD), ("U-JUSTICE-D01", HandoffRole.CO_OPERATING)]
    assert plan == plan_whistle(INDEX, GRID, Category.NEIGHBOUR_DISPUTE)


def test_off_duty_officer_is_replaced_by_the_teammate_on_duty_following_the_chain() -> None:
    friday = plan_whistle(INDEX, GRID, Category.VIOLENCE, at_shanghai(2, 10))
    assert units(friday) == [("U-POL-P0013", HandoffRole.LEAD), ("U-HEALTH-D01", HandoffRole.CO_OPERATING)]
    assert friday[0].stands_in_for == "U-POL-P0001" and friday[0].reason == "roster_fallback:officer"
    # Wednesday: P0013 is off too, and P0013's own fallback P0025 is on duty.
    assert plan_whistle(INDEX, GRID, Category.THEFT, at_shanghai(7, 10))[0].unit_id == "U-POL-P0025"
    # Thursday 07:00 is still Wednesday's 24-hour duty.
    assert plan_whistle(INDEX, GRID, Category.THEFT, at_shanghai(1, 7))[0].unit_id == "U-POL-P0025"


def test_with_every_fallback_officer_off_the_station_duty_desk_answers_once() -> None:
    office_hours = (Shift(days="mon-fri", start=time(9), end=time(17)),)
    roster = DutyRoster(version="office", entries=(
        RosterEntry(officer_id="P0001", shifts=office_hours, fallback_officer_id="P0013"),
        RosterEntry(officer_id="P0013", shifts=office_hours, fallback_officer_id="P0001", fallback_unit_id="U-DESK-S0101"),
    ))
    plan = plan_whistle(with_roster(roster), GRID, Category.FIRE, at_shanghai(1, 23))
    assert units(plan) == [
        ("U-FIRE_RESCUE-D01", HandoffRole.LEAD),
        ("U-DESK-S0101", HandoffRole.CO_OPERATING),  # police row and grid officer: one desk handoff
        ("U-HEALTH-D01", HandoffRole.CO_OPERATING),
    ]
    assert plan[1].reason == "roster_fallback:unit"  # met along the chain, at P0013


def test_a_rostered_department_off_duty_falls_back_to_its_fallback_unit() -> None:
    office_hours = Shift(days="mon-fri", start=time(9), end=time(17))
    roster = CITY.roster.model_copy(
        update={"entries": (*CITY.roster.entries, RosterEntry(unit_id="U-JUSTICE-D01", shifts=(office_hours,),
                                                              fallback_unit_id="U-CMD-D01"))}
    )
    index = with_roster(roster)
    daytime = plan_whistle(index, GRID, Category.NEIGHBOUR_DISPUTE, SHANGHAI_THURSDAY_4PM)
    evening = plan_whistle(index, GRID, Category.NEIGHBOUR_DISPUTE, at_shanghai(1, 18))
    assert [s.unit_id for s in daytime] == ["U-POL-P0001", "U-JUSTICE-D01"]
    assert [s.unit_id for s in evening] == ["U-POL-P0001", "U-CMD-D01"]
    assert evening[1].department == "command" and evening[1].stands_in_for == "U-JUSTICE-D01"


def test_without_a_roster_every_unit_counts_as_on_duty() -> None:
    index = with_roster(None)
    assert units(plan_whistle(index, GRID, Category.THEFT, at_shanghai(1, 3))) == [("U-POL-P0001", HandoffRole.LEAD)]


def test_reclassification_while_off_duty_keeps_the_officer_summoned_on_duty() -> None:
    day = SHANGHAI_THURSDAY_4PM
    officer = domain.dispatch(
        "inc-1", plan_whistle(INDEX, GRID, Category.THEFT, day)[0], category=Category.THEFT, urgency=Urgency.GENERAL,
        grid_id=GRID, dispatched_at=day, report_due_at=day + timedelta(hours=2), sequence="whistle",
    )
    later = at_shanghai(2, 10)  # Friday: P0013 would stand in for a new whistle
    plan = domain.replan(
        INDEX, GRID, [officer], category=Category.NEIGHBOUR_DISPUTE, previous_category=Category.THEFT,
        urgency=Urgency.GENERAL, previous_urgency=Urgency.GENERAL, now=later, fresh_due=later + timedelta(hours=2),
    )
    assert plan.release == ()
    assert [s.unit_id for s, _ in plan.summon] == ["U-JUSTICE-D01"]
    assert officer.state is HandoffState.DISPATCHED
