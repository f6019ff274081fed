"""Reference data from a directory of CSV files: round trip, row-level errors, and the check CLI."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from contracts.reference import ReferenceDataError, demo_city, load_reference_data, write_reference_csv
from services.routing.reference import main


@pytest.fixture
def city_dir(tmp_path: Path) -> Path:
    return write_reference_csv(demo_city(grids=20, officers=6, stations_per_district=1), tmp_path / "city")


def edit_cell(path: Path, row_id: str, column: str, value: str) -> int:
    """Set one cell of the row whose first cell is row_id; return its line number."""
    with path.open(encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    col = rows[0].index(column)
    index = next(i for i, row in enumerate(rows) if row[0] == row_id)
    rows[index][col] = value
    with path.open("w", encoding="utf-8", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)
    return index + 1


def append_line(path: Path, line: str) -> int:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(line + "\n")
    return len(path.read_text(encoding="utf-8").splitlines())


def errors_of(directory: Path) -> list[str]:
    with pytest.raises(ReferenceDataError) as error:
        load_reference_data(directory)
    return [str(e) for e in error.value.errors]


def test_the_demo_city_round_trips_through_csv_with_its_roster(tmp_path: Path) -> None:
    city = demo_city()
    directory = write_reference_csv(city, tmp_path / "demo")
    assert load_reference_data(directory) == city
    assert load_reference_data(directory).roster.timezone == "Asia/Shanghai"


def test_a_bad_value_is_reported_with_file_line_and_column(city_dir: Path) -> None:
    line = edit_cell(city_dir / "units.csv", "U-CMD-D01", "kind", "choir")
    errors = errors_of(city_dir)
    assert len(errors) == 1
    assert errors[0].startswith(f"units.csv:{line}: kind: String should match pattern")


def test_an_unknown_reference_is_reported_at_the_row_that_makes_it(city_dir: Path) -> None:
    line = edit_cell(city_dir / "grids.csv", "G0003", "officer_id", "P9999")
    assert errors_of(city_dir) == [f"grids.csv:{line}: officer_id: grid G0003: unknown officer 'P9999'"]


def test_header_problems_are_reported_on_line_one_and_a_missing_file_by_name(city_dir: Path) -> None:
    stations = city_dir / "stations.csv"
    lines = stations.read_text(encoding="utf-8").splitlines()
    stations.write_text("\n".join([lines[0].replace("duty_desk_unit_id", "colour"), *lines[1:]]) + "\n", encoding="utf-8")
    (city_dir / "communities.csv").unlink()
    errors = errors_of(city_dir)
    assert "communities.csv: file missing" in errors
    assert "stations.csv:1: colour: unknown column" in errors
    assert "stations.csv:1: duty_desk_unit_id: required column missing" in errors


def test_roster_rows_are_checked_for_weekdays_conflicting_fallbacks_and_unknown_ids(city_dir: Path) -> None:
    roster = city_dir / "roster.csv"
    bad_day = append_line(roster, "P0001,,mon-funday,07:00,08:00,,")
    conflict = append_line(roster, "P0001,,sun,20:00,08:00,P0002,")
    errors = errors_of(city_dir)
    assert errors[0].startswith(f"roster.csv:{bad_day}: days: unknown weekday in 'mon-funday'")
    assert errors[1].startswith(f"roster.csv:{conflict}: fallback_officer_id: conflicts with")
    roster.write_text("\n".join(roster.read_text(encoding="utf-8").splitlines()[:-2]) + "\n", encoding="utf-8")
    ghost = append_line(roster, "P9998,,mon-fri,22:00,06:00,,U-NOPE")
    assert errors_of(city_dir) == [
        f"roster.csv:{ghost}: officer_id: roster entry P9998: unknown officer 'P9998'",
        f"roster.csv:{ghost}: fallback_unit_id: roster entry P9998: unknown fallback unit 'U-NOPE'",
    ]


def test_meta_needs_a_version_and_a_known_time_zone(city_dir: Path) -> None:
    (city_dir / "meta.csv").write_text("key,value\nroster_timezone,Asia/Atlantis\n", encoding="utf-8")
    errors = errors_of(city_dir)
    assert errors[0].startswith("meta.csv: version: the reference data version is required")
    assert errors[1] == "meta.csv: roster_timezone: unknown time zone 'Asia/Atlantis'"


def test_check_cli_prints_a_summary_or_the_errors(city_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(city_dir)]) == 0
    out = capsys.readouterr().out
    assert "reference data demo-city-2026-20g-6p: 3 districts, 3 stations" in out
    assert "roster demo-roster-2026.2 (Asia/Shanghai): 6 entries, 6 shifts" in out
    line = edit_cell(city_dir / "grids.csv", "G0002", "community_id", "C-NOWHERE")
    assert main(["check", str(city_dir)]) == 1
    assert f"grids.csv:{line}: community_id: grid G0002: unknown community 'C-NOWHERE'" in capsys.readouterr().err


def test_check_cli_reads_yaml_too(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "city.yaml"
    path.write_text("version: [not, a, city]\n", encoding="utf-8")
    assert main(["check", str(path)]) == 1
    assert "invalid reference data" in capsys.readouterr().err
