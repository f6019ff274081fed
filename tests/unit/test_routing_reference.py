"""Reference data import for routing: bad rows are named clearly; neighbours are checked."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from contracts.reference import ReferenceDataError, demo_city, load_reference_data


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
