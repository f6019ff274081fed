"""Reference data as versioned data: areas, officers, departments, units, the responsibility list.

District → police station → community → grid. Every grid has one community police officer
("one grid, one officer") with auxiliary police; every station has a duty desk and every
district a command centre, the owner of last resort (兜底). The responsibility list (责任清单)
maps a category to its lead and co-operating departments, optionally per district.

The duty roster says who is on duty when (weekly shifts in the roster's local time zone) and who
stands in when nobody is. Reference data loads from one YAML/JSON file or from a directory of CSV
files (one per section); either way a bad row is named (file, line, column) with its message.

The demo city is generated deterministically, so every service that loads it sees the same city.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from datetime import datetime, time
from functools import cached_property
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from contracts.vocabulary import Category

POLICE = "police"
# Reference data and roster versions are recorded on every handoff, in a column of this size.
VERSION_MAX_LENGTH = 200


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


WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def parse_days(value: object) -> tuple[str, ...]:
    """Weekdays from a list of names or a string such as `mon-fri`, `mon;wed;sat` or `daily`."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("daily", "all", "*"):
            return WEEKDAYS
        days: list[str] = []
        for part in text.replace(",", ";").split(";"):
            first, sep, last = part.strip().partition("-")
            if first not in WEEKDAYS or (sep and last not in WEEKDAYS):
                raise ValueError(f"unknown weekday in {value!r}; use mon..sun, ranges like mon-fri, or daily")
            if not sep:
                days.append(first)
                continue
            start, end = WEEKDAYS.index(first), WEEKDAYS.index(last)
            days += [WEEKDAYS[(start + k) % 7] for k in range((end - start) % 7 + 1)]
        value = days
    if not isinstance(value, list | tuple) or not value:
        raise ValueError("days must name at least one weekday")
    unknown = [d for d in value if d not in WEEKDAYS]
    if unknown:
        raise ValueError(f"unknown weekday(s) {unknown}; use mon..sun")
    return tuple(sorted(set(value), key=WEEKDAYS.index))


class Shift(_Ref):
    """A weekly shift in the roster's local time; `end` at or before `start` runs past midnight."""

    days: tuple[str, ...]
    start: time
    end: time

    @field_validator("days", mode="before")
    @classmethod
    def _days(cls, value: object) -> tuple[str, ...]:
        return parse_days(value)

    def covers(self, local: datetime) -> bool:
        """True if this shift is running at a local wall-clock instant."""
        today, now = WEEKDAYS[local.weekday()], local.time().replace(tzinfo=None)
        if self.start < self.end:
            return today in self.days and self.start <= now < self.end
        # Overnight (or a full day when end == start): it started today, or it started yesterday.
        yesterday = WEEKDAYS[(local.weekday() - 1) % 7]
        return (today in self.days and now >= self.start) or (yesterday in self.days and now < self.end)


class _Rostered(_Ref):
    """Who a roster line is about (one officer or one unit) and who stands in for them."""

    officer_id: str | None = None
    unit_id: str | None = None
    fallback_officer_id: str | None = None
    fallback_unit_id: str | None = None

    @model_validator(mode="after")
    def _one_subject(self) -> _Rostered:
        if (self.officer_id is None) == (self.unit_id is None):
            raise ValueError("a roster entry names exactly one of officer_id or unit_id")
        return self

    @property
    def subject(self) -> str:
        """The officer or unit id this entry rosters."""
        return self.officer_id or self.unit_id or ""


class RosterEntry(_Rostered):
    """When one officer (or one unit) is on duty, and who stands in otherwise.

    Off duty, the fallback officer stands in, or that officer's own fallback officer and so on (a
    chain), then the first on-duty fallback unit met along the chain.
    """

    shifts: tuple[Shift, ...] = Field(min_length=1)

    def on_duty(self, local: datetime) -> bool:
        """True if any of the entry's shifts is running at the local instant."""
        return any(shift.covers(local) for shift in self.shifts)


class DutyRoster(_Ref):
    """Who is on duty when: weekly shifts in one local time zone (stored with the data), versioned."""

    # Every handoff records it (routing's handoffs.roster_version, HandoffDispatched.roster_version).
    version: str = Field(min_length=1, max_length=VERSION_MAX_LENGTH)
    timezone: str = "Asia/Shanghai"
    entries: tuple[RosterEntry, ...] = ()

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @cached_property
    def zone(self) -> ZoneInfo:
        """The roster's time zone."""
        return ZoneInfo(self.timezone)

    def local(self, at: datetime) -> datetime:
        """An aware instant as the roster's local wall-clock time."""
        return at.astimezone(self.zone)


@dataclass(frozen=True)
class Issue:
    """One referential problem, placed at a row and column of a section."""

    section: str
    index: int
    column: str
    message: str


class ReferenceData(_Ref):
    """The whole reference data set, validated for referential integrity."""

    # Every handoff records it (routing's handoffs.reference_version, HandoffDispatched.reference_version).
    version: str = Field(min_length=1, max_length=VERSION_MAX_LENGTH)
    departments: tuple[Department, ...]
    districts: tuple[District, ...]
    stations: tuple[Station, ...]
    communities: tuple[Community, ...]
    officers: tuple[Officer, ...]
    grids: tuple[Grid, ...]
    units: tuple[Unit, ...]
    responsibilities: tuple[Responsibility, ...]
    roster: DutyRoster | None = None

    @model_validator(mode="after")
    def _check_references(self) -> ReferenceData:
        issues = self.issues()
        if issues:
            raise ValueError("; ".join(issue.message for issue in issues[:20]))
        return self

    def issues(self) -> list[Issue]:
        """Every referential problem (unknown or duplicate ids), each placed at its row and column."""
        found: list[Issue] = []
        depts = {d.code for d in self.departments}
        units = {u.id for u in self.units}
        districts = {d.id for d in self.districts}
        stations = {s.id for s in self.stations}
        communities = {c.id for c in self.communities}
        officers = {o.id for o in self.officers}

        def check(section: str, rows: tuple[Any, ...], column: str, known: set[str], what: str, label: str) -> None:
            for index, row in enumerate(rows):
                value = getattr(row, column)
                for item in value if isinstance(value, tuple) else (value,):
                    if item is not None and item not in known:
                        name = getattr(row, "id", None) or getattr(row, "subject", "")
                        found.append(Issue(section, index, column, f"{label} {name}: unknown {what} {item!r}"))

        for section, kind, key in (("departments", "department", "code"), ("units", "unit", "id"), ("grids", "grid", "id")):
            seen: set[str] = set()
            for index, row in enumerate(getattr(self, section)):
                if getattr(row, key) in seen:
                    found.append(Issue(section, index, key, f"duplicate {kind} id {getattr(row, key)!r}"))
                seen.add(getattr(row, key))
        for index, unit in enumerate(self.units):
            if unit.department not in depts:
                found.append(Issue("units", index, "department", f"unit {unit.id}: unknown department {unit.department!r}"))
        check("units", self.units, "district_id", districts, "district", "unit")
        check("districts", self.districts, "command_centre_unit_id", units, "command centre unit", "district")
        for index, district in enumerate(self.districts):
            for n in district.neighbour_district_ids:
                if n not in districts or n == district.id:
                    message = f"district {district.id}: unknown neighbour district {n!r}"
                    found.append(Issue("districts", index, "neighbour_district_ids", message))
        check("stations", self.stations, "district_id", districts, "district", "station")
        check("stations", self.stations, "duty_desk_unit_id", units, "duty desk unit", "station")
        check("communities", self.communities, "station_id", stations, "station", "community")
        check("officers", self.officers, "unit_id", units, "unit", "officer")
        check("grids", self.grids, "community_id", communities, "community", "grid")
        check("grids", self.grids, "officer_id", officers, "officer", "grid")
        for index, row in enumerate(self.responsibilities):
            for column in ("lead_department", "co_departments"):
                value = getattr(row, column)
                for dept in value if isinstance(value, tuple) else (value,):
                    if dept not in depts:
                        message = f"responsibility {row.category.value}: unknown department {dept!r}"
                        found.append(Issue("responsibilities", index, column, message))
        if self.roster is not None:
            entries = self.roster.entries
            check("roster", entries, "officer_id", officers, "officer", "roster entry")
            check("roster", entries, "unit_id", units, "unit", "roster entry")
            check("roster", entries, "fallback_officer_id", officers, "fallback officer", "roster entry")
            check("roster", entries, "fallback_unit_id", units, "fallback unit", "roster entry")
            seen = set()
            for index, entry in enumerate(entries):
                if entry.subject in seen:
                    found.append(Issue("roster", index, entry.officer_id and "officer_id" or "unit_id",
                                       f"roster entry {entry.subject}: rostered twice"))
                seen.add(entry.subject)
        return found

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

    @cached_property
    def _roster_by_unit(self) -> dict[str, RosterEntry]:
        entries: dict[str, RosterEntry] = {}
        for entry in self.roster.entries if self.roster else ():
            officer = self.officer(entry.officer_id) if entry.officer_id else None
            entries.setdefault(officer.unit_id if officer else entry.subject, entry)
        return entries

    def roster_entry(self, unit_id: str) -> RosterEntry | None:
        """The roster entry of a unit (an officer's entry covers the officer's unit); None = always on duty."""
        return self._roster_by_unit.get(unit_id)

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

    def __init__(self, message: str, errors: list[CsvError] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


def load_reference_data(path: str | Path | None = None) -> ReferenceData:
    """Load reference data from a YAML/JSON file or a CSV directory; the demo city when no path is given."""
    if not path:
        return demo_city()
    if Path(path).is_dir():
        return load_reference_csv(path)
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


# --- CSV: one file per section, one row per record; list cells are separated by ";" ----------------

CSV_SECTIONS: dict[str, type[_Ref]] = {
    "departments": Department,
    "districts": District,
    "stations": Station,
    "communities": Community,
    "officers": Officer,
    "grids": Grid,
    "units": Unit,
    "responsibilities": Responsibility,
}
META_FILE = "meta.csv"
ROSTER_FILE = "roster.csv"
ROSTER_COLUMNS = ("officer_id", "unit_id", "days", "start", "end", "fallback_officer_id", "fallback_unit_id")


class _RosterRow(_Rostered, Shift):
    """One line of roster.csv: one shift of one officer or unit, with that subject's fallback."""


@dataclass(frozen=True)
class CsvError:
    """A problem at a place in a CSV file (line 1 is the header)."""

    file: str
    line: int
    column: str
    message: str

    def __str__(self) -> str:
        place = f"{self.file}:{self.line}" if self.line else self.file  # line 0: the file as a whole
        return f"{place}: {self.column}: {self.message}" if self.column else f"{place}: {self.message}"


def _list_columns(model: type[_Ref]) -> set[str]:
    return {name for name, info in model.model_fields.items() if "tuple" in str(info.annotation)}


def _read_csv(directory: Path, name: str, model: type[_Ref], errors: list[CsvError]) -> list[tuple[int, dict[str, Any]]]:
    """Rows of one CSV file as (line, cells): blank cells left out, list cells split on ';'."""
    path = directory / name
    if not path.is_file():
        errors.append(CsvError(name, 0, "", "file missing"))
        return []
    lists = _list_columns(model) - {"days"}
    allowed = set(model.model_fields)
    required = {n for n, info in model.model_fields.items() if info.is_required()}
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in reader.fieldnames or []]
        reader.fieldnames = header
        errors += [CsvError(name, 1, h, "unknown column") for h in header if h not in allowed]
        errors += [CsvError(name, 1, c, "required column missing") for c in sorted(required - set(header))]
        rows = []
        for cells in reader:
            line = reader.line_num
            if None in cells:
                errors.append(CsvError(name, line, "", f"{len(cells[None])} cell(s) more than the header has"))
            row: dict[str, Any] = {}
            for column in header:
                value = (cells.get(column) or "").strip()
                if value and column in allowed:
                    row[column] = [v.strip() for v in value.split(";") if v.strip()] if column in lists else value
            if row:
                rows.append((line, row))
        return rows


def _validate_rows(
    name: str, model: type[_Ref], rows: list[tuple[int, dict[str, Any]]], errors: list[CsvError]
) -> list[tuple[int, Any]]:
    valid = []
    for line, row in rows:
        try:
            valid.append((line, model.model_validate(row)))
        except ValidationError as exc:
            for error in exc.errors():
                column = str(error["loc"][0]) if error["loc"] else ""
                errors.append(CsvError(name, line, column, error["msg"].removeprefix("Value error, ")))
    return valid


def load_reference_csv(directory: str | Path) -> ReferenceData:
    """Load reference data from a directory of CSV files (meta.csv, one file per section, optional roster.csv)."""
    directory = Path(directory)
    errors: list[CsvError] = []
    meta: dict[str, str] = {}
    meta_path = directory / META_FILE
    if meta_path.is_file():
        with meta_path.open(encoding="utf-8-sig", newline="") as handle:
            meta = {row[0].strip(): row[1].strip() for row in csv.reader(handle) if len(row) >= 2 and row[0].strip() != "key"}
    if not meta.get("version"):
        errors.append(CsvError(META_FILE, 0, "version", "the reference data version is required (a row: version,<value>)"))
    sections: dict[str, list[Any]] = {}
    lines: dict[str, list[int]] = {}
    for section, model in CSV_SECTIONS.items():
        valid = _validate_rows(f"{section}.csv", model, _read_csv(directory, f"{section}.csv", model, errors), errors)
        sections[section] = [row for _, row in valid]
        lines[section] = [line for line, _ in valid]
    roster = None
    if (directory / ROSTER_FILE).is_file():
        rows = _read_csv(directory, ROSTER_FILE, _RosterRow, errors)
        roster, lines["roster"] = _roster_from_rows(rows, meta, errors)
    if not errors:
        candidate = ReferenceData.model_construct(version=meta["version"], roster=roster, **{k: tuple(v) for k, v in sections.items()})
        for issue in candidate.issues():
            file = ROSTER_FILE if issue.section == "roster" else f"{issue.section}.csv"
            errors.append(CsvError(file, lines[issue.section][issue.index], issue.column, issue.message))
    if errors:
        errors.sort(key=lambda e: (e.file, e.line))
        shown = [str(e) for e in errors[:50]] + ([f"... and {len(errors) - 50} more"] if len(errors) > 50 else [])
        raise ReferenceDataError(f"invalid reference data {directory}:\n" + "\n".join(shown), errors=errors)
    return ReferenceData.model_validate(candidate.model_dump())


def _roster_from_rows(
    rows: list[tuple[int, dict[str, Any]]], meta: dict[str, str], errors: list[CsvError]
) -> tuple[DutyRoster | None, list[int]]:
    """Group roster.csv's shift rows into one entry per officer/unit; a subject's fallback must not conflict."""
    grouped: dict[str, dict[str, Any]] = {}
    first_line: dict[str, int] = {}
    for line, row in _validate_rows(ROSTER_FILE, _RosterRow, rows, errors):
        subject = row.officer_id or row.unit_id
        entry = grouped.setdefault(subject, {"officer_id": row.officer_id, "unit_id": row.unit_id, "shifts": []})
        first_line.setdefault(subject, line)
        entry["shifts"].append(Shift(days=row.days, start=row.start, end=row.end))
        for column in ("fallback_officer_id", "fallback_unit_id"):
            value = getattr(row, column)
            if value and entry.get(column) not in (None, value):
                errors.append(CsvError(ROSTER_FILE, line, column, f"conflicts with {entry[column]!r} given earlier for {subject}"))
            elif value:
                entry[column] = value
    try:
        roster = DutyRoster(
            version=meta.get("roster_version") or meta.get("version") or "unversioned",
            timezone=meta.get("roster_timezone") or "Asia/Shanghai",
            entries=tuple(RosterEntry(**entry) for entry in grouped.values()),
        )
    except ValidationError as exc:
        errors += [CsvError(META_FILE, 0, "roster_timezone", e["msg"].removeprefix("Value error, ")) for e in exc.errors()]
        return None, []
    return roster, list(first_line.values())


def write_reference_csv(ref: ReferenceData, directory: str | Path) -> Path:
    """Write reference data as the CSV directory `load_reference_csv` reads (e.g. to edit the demo city)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = [("key", "value"), ("version", ref.version)]
    if ref.roster is not None:
        meta += [("roster_version", ref.roster.version), ("roster_timezone", ref.roster.timezone)]
    _write_rows(directory / META_FILE, [dict(zip(("key", "value"), row, strict=True)) for row in meta[1:]], ["key", "value"])
    for section, model in CSV_SECTIONS.items():
        columns = list(model.model_fields)
        rows = [row.model_dump(mode="json") for row in getattr(ref, section)]
        _write_rows(directory / f"{section}.csv", rows, columns)
    if ref.roster is not None:
        rows = []
        for entry in ref.roster.entries:
            for shift in entry.shifts:
                cells = entry.model_dump(mode="json", exclude={"shifts"})
                rows.append({**cells, "days": list(shift.days), "start": f"{shift.start:%H:%M}", "end": f"{shift.end:%H:%M}"})
        _write_rows(directory / ROSTER_FILE, rows, list(ROSTER_COLUMNS))
    return directory


def _write_rows(path: Path, rows: list[dict[str, Any]], columns: list[str]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({c: ";".join(map(str, v)) if isinstance(v, list) else "" if v is None else v for c, v in row.items()})


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
        roster=demo_roster(officers_by_station, {s.id: s.duty_desk_unit_id for s in stations}),
        departments=DEPARTMENTS,
        districts=tuple(districts),
        stations=tuple(stations),
        communities=tuple(communities),
        officers=tuple(officer_rows),
        grids=tuple(grid_rows),
        units=tuple(units),
        responsibilities=RESPONSIBILITY_LIST,
    )


SHIFT_CHANGE = time(8, 0)


def demo_roster(officers_by_station: dict[str, list[Officer]], desks: dict[str, str]) -> DutyRoster:
    """24-hour duties from 08:00 rotating in teams of three officers of a station (one on, two off).

    Teammates stand in for each other, so some officer of the grid's station always answers; the
    station duty desk is the fallback unit of last resort. Deterministic, like the rest of the demo city.
    """
    entries = []
    for station_id, station_officers in officers_by_station.items():
        teams = [station_officers[i:i + 3] for i in range(0, len(station_officers), 3)]
        if len(teams) > 1 and len(teams[-1]) < 3:  # a short last team would work every other day or daily
            short = teams.pop()
            teams[-1] = teams[-1] + short
        for team in teams:
            for position, officer in enumerate(team):
                # Day d of the week (mon = 0) belongs to teammate d mod team size: mon/thu/sun, tue/fri, wed/sat.
                days = tuple(day for d, day in enumerate(WEEKDAYS) if d % len(team) == position)
                relief = team[(position + 1) % len(team)]
                entries.append(
                    RosterEntry(
                        officer_id=officer.id,
                        # end == start: the duty runs 24 hours, into the next morning.
                        shifts=(Shift(days=days, start=SHIFT_CHANGE, end=SHIFT_CHANGE),),
                        # Teammates form a ring, so following fallbacks always reaches the one on duty.
                        fallback_officer_id=relief.id if relief is not officer else None,
                        fallback_unit_id=desks[station_id],
                    )
                )
    return DutyRoster(version="demo-roster-2026.2", timezone="Asia/Shanghai", entries=tuple(entries))
