"""Reference data as versioned data: areas, officers, departments, units, the responsibility list.

District → police station → community → grid. Every grid has one community police officer
("one grid, one officer") with auxiliary police; every station has a duty desk and every
district a command centre, the owner of last resort (兜底). The responsibility list (责任清单)
maps a category to its lead and co-operating departments, optionally per district.

The demo city is generated deterministically, so every service that loads it sees the same city.
"""

from __future__ import annotations

import random
from collections import Counter
from functools import cached_property
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from contracts.vocabulary import Category

POLICE = "police"


class _Ref(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Department(_Ref):
    """A department that can be summoned (城管, 民政, 卫健, 消防 ...)."""

    code: str = Field(pattern=r"^[a-z_]+$")
    name: str
    name_en: str


class Unit(_Ref):
    """A team that receives handoffs and whose members may act on them."""

    id: str
    name: str
    department: str
    kind: str = Field(pattern=r"^(community_police|duty_desk|command_centre|department)$")
    district_id: str
    station_id: str | None = None
    members: tuple[str, ...] = ()


class District(_Ref):
    """A district; owns a command centre and may name the districts it borders."""

    id: str
    name: str
    command_centre_unit_id: str
    # Where a declined department handoff is tried next (a neighbour's unit of that department).
    neighbour_district_ids: tuple[str, ...] = ()


class Station(_Ref):
    """A police station (派出所) with a duty desk."""

    id: str
    name: str
    district_id: str
    duty_desk_unit_id: str


class Community(_Ref):
    """A community (社区) under a station."""

    id: str
    name: str
    station_id: str


class Officer(_Ref):
    """A community police officer and the unit (officer + auxiliaries) that answers for their grids."""

    id: str
    name: str
    station_id: str
    unit_id: str
    auxiliary_ids: tuple[str, ...] = ()


class Grid(_Ref):
    """The smallest management area, walked by a grid worker, covered by one officer."""

    id: str
    name: str
    community_id: str
    officer_id: str
    grid_worker_ids: tuple[str, ...] = ()
    latitude: float
    longitude: float


class Responsibility(_Ref):
    """One row of the responsibility list: who leads and who co-operates on a category."""

    category: Category
    lead_department: str
    co_departments: tuple[str, ...] = ()
    district_id: str | None = None


class ReferenceData(_Ref):
    """The whole reference data set, validated for referential integrity."""

    version: str
    departments: tuple[Department, ...]
    districts: tuple[District, ...]
    stations: tuple[Station, ...]
    communities: tuple[Community, ...]
    officers: tuple[Officer, ...]
    grids: tuple[Grid, ...]
    units: tuple[Unit, ...]
    responsibilities: tuple[Responsibility, ...]

    @model_validator(mode="after")
    def _check_references(self) -> ReferenceData:
        errors: list[str] = []
        depts = {d.code for d in self.departments}
        units = {u.id for u in self.units}
        districts = {d.id for d in self.districts}
        stations = {s.id for s in self.stations}
        communities = {c.id for c in self.communities}
        officers = {o.id for o in self.officers}
        for kind, ids in (
            ("department", [d.code for d in self.departments]),
            ("unit", [u.id for u in self.units]),
            ("grid", [g.id for g in self.grids]),
        ):
            errors += [f"duplicate {kind} id {i!r}" for i, n in sorted(Counter(ids).items()) if n > 1]
        errors += [f"unit {u.id}: unknown department {u.department!r}" for u in self.units if u.department not in depts]
        errors += [f"unit {u.id}: unknown district {u.district_id!r}" for u in self.units if u.district_id not in districts]
        errors += [
            f"district {d.id}: unknown command centre unit {d.command_centre_unit_id!r}"
            for d in self.districts
            if d.command_centre_unit_id not in units
        ]
        errors += [
            f"district {d.id}: unknown neighbour district {n!r}"
            for d in self.districts
            for n in d.neighbour_district_ids
            if n not in districts or n == d.id
        ]
        errors += [f"station {s.id}: unknown district {s.district_id!r}" for s in self.stations if s.district_id not in districts]
        errors += [
            f"station {s.id}: unknown duty desk unit {s.duty_desk_unit_id!r}" for s in self.stations if s.duty_desk_unit_id not in units
        ]
        errors += [f"community {c.id}: unknown station {c.station_id!r}" for c in self.communities if c.station_id not in stations]
        errors += [f"officer {o.id}: unknown unit {o.unit_id!r}" for o in self.officers if o.unit_id not in units]
        errors += [f"grid {g.id}: unknown community {g.community_id!r}" for g in self.grids if g.community_id not in communities]
        errors += [f"grid {g.id}: unknown officer {g.officer_id!r}" for g in self.grids if g.officer_id not in officers]
        for r in self.responsibilities:
            for dept in (r.lead_department, *r.co_departments):
                if dept not in depts:
                    errors.append(f"responsibility {r.category.value}: unknown department {dept!r}")
        if errors:
            raise ValueError("; ".join(errors[:20]))
        return self

    @cached_property
    def _grids(self) -> dict[str, Grid]:
        return {g.id: g for g in self.grids}

    @cached_property
    def _units(self) -> dict[str, Unit]:
        return {u.id: u for u in self.units}

    @cached_property
    def _officers(self) -> dict[str, Officer]:
        return {o.id: o for o in self.officers}

    @cached_property
    def _communities(self) -> dict[str, Community]:
        return {c.id: c for c in self.communities}

    @cached_property
    def _stations(self) -> dict[str, Station]:
        return {s.id: s for s in self.stations}

    @cached_property
    def _districts(self) -> dict[str, District]:
        return {d.id: d for d in self.districts}

    @cached_property
    def _department_units(self) -> dict[tuple[str, str], Unit]:
        return {(u.department, u.district_id): u for u in self.units if u.kind == "department"}

    def grid(self, grid_id: str) -> Grid | None:
        """A grid by id, or None."""
        return self._grids.get(grid_id)

    def unit(self, unit_id: str) -> Unit | None:
        """A unit by id, or None."""
        return self._units.get(unit_id)

    def officer(self, officer_id: str) -> Officer | None:
        """An officer by id, or None."""
        return self._officers.get(officer_id)

    def station_of(self, grid: Grid) -> Station:
        """The police station a grid belongs to."""
        return self._stations[self._communities[grid.community_id].station_id]

    def district_of(self, grid: Grid) -> District:
        """The district a grid belongs to."""
        return self._districts[self.station_of(grid).district_id]

    def department_unit(self, department: str, district_id: str) -> Unit | None:
        """The unit of a department that serves a district."""
        return self._department_units.get((department, district_id))

    def responsibility(self, category: Category, district_id: str | None = None) -> Responsibility | None:
        """The responsibility-list row for a category (a district-specific row wins)."""
        general = None
        for row in self.responsibilities:
            if row.category is category:
                if row.district_id == district_id and district_id is not None:
                    return row
                if row.district_id is None:
                    general = row
        return general


class ReferenceDataError(ValueError):
    """Reference data failed validation; the message lists every bad row found."""


def load_reference_data(path: str | Path | None = None) -> ReferenceData:
    """Load reference data from a YAML/JSON file, or generate the demo city when no path is given."""
    if not path:
        return demo_city()
    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        return ReferenceData.model_validate(document)
    except (OSError, yaml.YAMLError) as exc:
        raise ReferenceDataError(f"cannot read reference data {path}: {exc}") from exc
    except ValidationError as exc:
        lines = describe_errors(document, exc)
        raise ReferenceDataError(f"invalid reference data {path}:\n" + "\n".join(lines)) from exc


def describe_errors(document: object, exc: ValidationError, limit: int = 20) -> list[str]:
    """One line per bad row, naming the row by section, position and id (e.g. `grids[3] (G0004)`)."""
    lines: list[str] = []
    for error in exc.errors()[:limit]:
        loc = list(error["loc"])
        where = ".".join(map(str, loc)) or "<document>"
        if len(loc) >= 2 and isinstance(loc[0], str) and isinstance(loc[1], int):
            row = _row(document, loc[0], loc[1])
            row_id = row.get("id") or row.get("code") or row.get("category") if isinstance(row, dict) else None
            where = f"{loc[0]}[{loc[1]}]" + (f" ({row_id})" if row_id else "")
            if len(loc) > 2:
                where += ": " + ".".join(map(str, loc[2:]))
        message = error["msg"].removeprefix("Value error, ")
        # Cross-row problems arrive as one message; give each its own line.
        lines += [f"{where}: {part}" for part in message.split("; ")] if not error["loc"] else [f"{where}: {message}"]
    return lines


def _row(document: object, section: str, index: int) -> object:
    rows = document.get(section) if isinstance(document, dict) else None
    return rows[index] if isinstance(rows, list) and 0 <= index < len(rows) else None


DEPARTMENTS = (
    Department(code=POLICE, name="公安", name_en="Police"),
    Department(code="urban_management", name="城管", name_en="Urban management"),
    Department(code="civil_affairs", name="民政", name_en="Civil affairs"),
    Department(code="health", name="卫健", name_en="Health"),
    Department(code="fire_rescue", name="消防", name_en="Fire and rescue"),
    Department(code="market_regulation", name="市场监管", name_en="Market regulation"),
    Department(code="justice", name="司法", name_en="Justice and mediation"),
    Department(code="housing", name="住建", name_en="Housing and construction"),
    Department(code="hrss", name="人社", name_en="Human resources and social security"),
    Department(code="ecology", name="生态环境", name_en="Ecology and environment"),
    Department(code="transport", name="交通", name_en="Transport"),
    Department(code="command", name="指挥中心", name_en="Command centre"),
)

RESPONSIBILITY_LIST = (
    Responsibility(category=Category.NEIGHBOUR_DISPUTE, lead_department=POLICE, co_departments=("justice",)),
    Responsibility(category=Category.THEFT, lead_department=POLICE),
    Responsibility(category=Category.TELECOM_FRAUD, lead_department=POLICE),
    Responsibility(category=Category.VIOLENCE, lead_department=POLICE, co_departments=("health",)),
    Responsibility(category=Category.FIRE, lead_department="fire_rescue", co_departments=(POLICE, "health")),
    Responsibility(category=Category.MEDICAL_EMERGENCY, lead_department="health", co_departments=(POLICE,)),
    Responsibility(category=Category.TRAFFIC_ACCIDENT, lead_department=POLICE, co_departments=("health", "transport")),
    Responsibility(category=Category.MISSING_PERSON, lead_department=POLICE, co_departments=("civil_affairs",)),
    Responsibility(category=Category.SAFETY_HAZARD, lead_department="housing", co_departments=(POLICE, "fire_rescue")),
    Responsibility(category=Category.CONSULTATION, lead_department=POLICE),
    Responsibility(category=Category.MEDIATION_REQUEST, lead_department="justice", co_departments=(POLICE, "hrss")),
    Responsibility(category=Category.ENVIRONMENT, lead_department="urban_management", co_departments=("ecology",)),
    Responsibility(category=Category.CIVIL_AFFAIRS, lead_department="civil_affairs", co_departments=(POLICE,)),
    Responsibility(category=Category.MARKET_SAFETY, lead_department="market_regulation", co_departments=(POLICE,)),
    Responsibility(category=Category.NOISE, lead_department="urban_management", co_departments=(POLICE,)),
    Responsibility(category=Category.OTHER, lead_department=POLICE),
)

_DISTRICT_NAMES = ("东城区", "西城区", "南湖区")
_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
_GIVEN = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂"


def demo_city(grids: int = 860, officers: int = 320, stations_per_district: int = 4, seed: int = 2026) -> ReferenceData:
    """A realistic city: 860 grids, 320 community officers, 3 districts, 12 stations (deterministic)."""
    rng = random.Random(seed)
    districts, stations, communities, officer_rows, grid_rows, units = [], [], [], [], [], []
    station_ids: list[str] = []
    for d_index, d_name in enumerate(_DISTRICT_NAMES, start=1):
        district_id = f"D{d_index:02d}"
        command_unit = f"U-CMD-{district_id}"
        units.append(
            Unit(
                id=command_unit, name=f"{d_name}指挥中心", department="command", kind="command_centre",
                district_id=district_id, members=tuple(f"cmd-{district_id}-{i}" for i in range(1, 4)),
            )
        )
        districts.append(District(id=district_id, name=d_name, command_centre_unit_id=command_unit))
        for dept in DEPARTMENTS:
            if dept.code in (POLICE, "command"):
                continue
            units.append(
                Unit(
                    id=f"U-{dept.code.upper()}-{district_id}", name=f"{d_name}{dept.name}", department=dept.code,
                    kind="department", district_id=district_id,
                    members=tuple(f"{dept.code}-{district_id}-{i}" for i in range(1, 3)),
                )
            )
        for s_index in range(1, stations_per_district + 1):
            station_id = f"S{d_index:02d}{s_index:02d}"
            desk = f"U-DESK-{station_id}"
            units.append(
                Unit(
                    id=desk, name=f"{d_name}第{s_index}派出所值班室", department=POLICE, kind="duty_desk",
                    district_id=district_id, station_id=station_id,
                    members=tuple(f"desk-{station_id}-{i}" for i in range(1, 3)),
                )
            )
            stations.append(
                Station(id=station_id, name=f"{d_name}第{s_index}派出所", district_id=district_id, duty_desk_unit_id=desk)
            )
            station_ids.append(station_id)
    # Officers spread evenly over stations; each has one or two auxiliaries.
    officers_by_station: dict[str, list[Officer]] = {s: [] for s in station_ids}
    for o_index in range(1, officers + 1):
        station_id = station_ids[(o_index - 1) % len(station_ids)]
        district_id = next(s.district_id for s in stations if s.id == station_id)
        officer_id = f"P{o_index:04d}"
        unit_id = f"U-POL-{officer_id}"
        aux = tuple(f"A{o_index:04d}{k}" for k in range(1, rng.choice((2, 3))))
        name = rng.choice(_SURNAMES) + rng.choice(_GIVEN) + rng.choice(("", rng.choice(_GIVEN)))
        units.append(
            Unit(
                id=unit_id, name=f"社区民警{name}", department=POLICE, kind="community_police",
                district_id=district_id, station_id=station_id, members=(officer_id, *aux),
            )
        )
        officer = Officer(id=officer_id, name=name, station_id=station_id, unit_id=unit_id, auxiliary_ids=aux)
        officer_rows.append(officer)
        officers_by_station[station_id].append(officer)
    # Grids: communities of ~10 grids, assigned station by station so an officer's grids are close.
    per_station = [grids // len(station_ids) + (1 if i < grids % len(station_ids) else 0) for i in range(len(station_ids))]
    g_index = 0
    for s_pos, station_id in enumerate(station_ids):
        station_officers = officers_by_station[station_id]
        base_lat, base_lon = 28.10 + 0.05 * (s_pos // 4), 112.90 + 0.05 * (s_pos % 4)
        for local in range(per_station[s_pos]):
            if local % 10 == 0:
                community_id = f"C{station_id}{local // 10 + 1:02d}"
                communities.append(Community(id=community_id, name=f"{community_id[-2:]}社区", station_id=station_id))
            g_index += 1
            officer = station_officers[local % len(station_officers)]
            grid_rows.append(
                Grid(
                    id=f"G{g_index:04d}", name=f"第{g_index}网格", community_id=community_id, officer_id=officer.id,
                    grid_worker_ids=(f"W{g_index:04d}",),
                    latitude=round(base_lat + rng.uniform(0, 0.04), 6), longitude=round(base_lon + rng.uniform(0, 0.04), 6),
                )
            )
    return ReferenceData(
        version=f"demo-city-{seed}-{grids}g-{officers}p",
        departments=DEPARTMENTS,
        districts=tuple(districts),
        stations=tuple(stations),
        communities=tuple(communities),
        officers=tuple(officer_rows),
        grids=tuple(grid_rows),
        units=tuple(units),
        responsibilities=RESPONSIBILITY_LIST,
    )
