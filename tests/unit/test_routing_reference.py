"""Reference data import for routing: bad rows are named clearly; neighbours are checked."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from contracts.reference import ReferenceDataError, demo_city, load_reference_data, write_reference_csv

ROOT = Path(__file__).resolve().parents[2]
DIGEST = "import hashlib; from contracts.reference import demo_city; print(hashlib.sha256(demo_city().model_dump_json().encode()).hexdigest())"


def _write(tmp_path: Path, document: dict) -> Path:
    path = tmp_path / "reference.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    return path


def _small_city() -> dict:
    return demo_city(grids=20, officers=6, stations_per_district=1).model_dump(mode="json")


def test_valid_yaml_round_trips_and_keeps_neighbours(tmp_path: Path) -> None:
    document = _small_city()
    document["districts"][0]["neighbour_district_ids"] = ["D02"]
    ref = load_reference_data(_write(tmp_path, document))
    assert ref.districts[0].neighbour_district_ids == ("D02",)
    assert ref.grid("G0001") is not None


def test_a_bad_row_is_named_by_section_position_and_id(tmp_path: Path) -> None:
    document = _small_city()
    del document["grids"][3]["latitude"]
    document["units"][0]["kind"] = "choir"
    with pytest.raises(ReferenceDataError) as error:
        load_reference_data(_write(tmp_path, document))
    message = str(error.value)
    assert "grids[3] (G0004): latitude: Field required" in message
    assert f"units[0] ({document['units'][0]['id']}): kind:" in message


def test_cross_row_errors_get_one_line_each(tmp_path: Path) -> None:
    document = _small_city()
    document["districts"][0]["neighbour_district_ids"] = ["D99"]
    document["grids"][0]["officer_id"] = "P-GHOST"
    with pytest.raises(ReferenceDataError) as error:
        load_reference_data(_write(tmp_path, document))
    lines = str(error.value).splitlines()
    assert any("district D01: unknown neighbour district 'D99'" in line for line in lines)
    assert any("grid G0001: unknown officer 'P-GHOST'" in line for line in lines)


def test_unreadable_yaml_says_which_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("districts: [unclosed", encoding="utf-8")
    with pytest.raises(ReferenceDataError, match="cannot read reference data .*broken.yaml"):
        load_reference_data(path)


def test_demo_city_has_the_published_size() -> None:
    city = demo_city()
    assert (len(city.districts), len(city.stations), len(city.communities)) == (3, 12, 96)
    assert (len(city.grids), len(city.officers)) == (860, 320)  # 2.7 grids per officer, as published
    assert city.version == "demo-city-2026-860g-320p"
    kinds = Counter(u.kind for u in city.units)
    departments = [d.code for d in city.departments if d.code not in ("police", "command")]
    assert kinds == {"community_police": 320, "department": 3 * len(departments), "duty_desk": 12, "command_centre": 3}
    # One grid, one officer: every grid names one officer and every officer covers two or three grids.
    assert set(Counter(g.officer_id for g in city.grids).values()) == {2, 3}
    assert {len(o.auxiliary_ids) for o in city.officers} <= {1, 2}
    assert (city.roster.version, city.roster.timezone, len(city.roster.entries)) == ("demo-roster-2026.2", "Asia/Shanghai", 320)


def test_demo_city_regenerates_identically_across_processes_and_as_csv(tmp_path: Path) -> None:
    here = hashlib.sha256(demo_city().model_dump_json().encode()).hexdigest()
    assert demo_city() == demo_city()
    # Another interpreter with a different hash seed: nothing may depend on set or dict iteration order.
    env = {**os.environ, "PYTHONHASHSEED": "4711"}
    there = subprocess.run([sys.executable, "-c", DIGEST], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert there.stdout.strip() == here
    first, second = write_reference_csv(demo_city(), tmp_path / "a"), write_reference_csv(demo_city(), tmp_path / "b")
    files = sorted(p.name for p in Path(first).iterdir())
    assert files == sorted(p.name for p in Path(second).iterdir()) and "grids.csv" in files
    assert all((Path(first) / n).read_bytes() == (Path(second) / n).read_bytes() for n in files)
    assert load_reference_data(first) == demo_city()


def test_a_version_too_long_to_record_on_a_handoff_is_refused(tmp_path: Path) -> None:
    document = _small_city()
    document["version"] = "v" * 201
    with pytest.raises(ReferenceDataError, match="version"):
        load_reference_data(_write(tmp_path, document))
