"""Evolution rules for published schemas, as pure functions over JSON Schema documents.

A released event version is a promise to every consumer, including ones still running older
code and records already sitting in Kafka. For the same type and version a change may only add
optional properties or enum values. Anything else (a removed property, a newly required one, a
changed type, a narrowed enum, a tightened constraint) is breaking and needs version N+1 plus an
upcaster from N, so consumers keep accepting the current and the previous versions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Schema = Mapping[str, Any]
Version = tuple[str, int]

# Constraint keywords and the direction in which a change tightens them.
_UPPER_BOUNDS = ("maxLength", "maximum", "exclusiveMaximum", "maxItems", "maxProperties")
_LOWER_BOUNDS = ("minLength", "minimum", "exclusiveMinimum", "minItems", "minProperties")
_EXACT = ("pattern", "format", "const", "multipleOf")


@dataclass(frozen=True)
class Breach:
    """One breaking difference between a released schema and the current one."""

    path: str
    kind: str
    detail: str

    def __str__(self) -> str:
        return f"{self.path}: {self.kind} ({self.detail})"


def breaking_changes(released: Schema, current: Schema) -> list[Breach]:
    """Every breaking difference from `released` to `current` (same type and version)."""
    return _compare(released, current, "", _resolver(released), _resolver(current))


def catalogue_problems(
    released: Mapping[Version, Schema],
    current: Mapping[Version, Schema],
    has_upcaster: Callable[[str, int], bool],
) -> list[str]:
    """Every violation of the evolution rules, as messages naming the type, version and field."""
    problems = []
    for event_type, version in sorted(released):
        if (event_type, version) not in current:
            problems.append(
                f"{event_type} v{version} was released but is no longer registered: keep its model class "
                "so records already in Kafka can still be read"
            )
            continue
        for breach in breaking_changes(released[(event_type, version)], current[(event_type, version)]):
            problems.append(
                f"{event_type} v{version}: {breach} is a breaking change: add {event_type} v{version + 1} "
                f"with an upcaster from v{version} instead of editing v{version}"
            )
    problems += missing_upcasters(current, has_upcaster)
    return problems


def missing_upcasters(versions: Iterable[Version], has_upcaster: Callable[[str, int], bool]) -> list[str]:
    """Versions above 1 that cannot be reached from version 1 by registered upcasters."""
    problems = []
    for event_type, version in sorted(set(versions)):
        for older in range(1, version):
            if not has_upcaster(event_type, older):
                problems.append(f"{event_type} v{version}: no upcaster from v{older} to v{older + 1}")
    return problems


def _resolver(document: Schema) -> Callable[[Schema], Schema]:
    definitions = document.get("$defs", {})

    def resolve(schema: Schema) -> Schema:
        while "$ref" in schema:
            schema = {**definitions[schema["$ref"].rsplit("/", 1)[-1]], **{k: v for k, v in schema.items() if k != "$ref"}}
        return schema

    return resolve


def _compare(old: Schema, new: Schema, path: str, old_ref: Callable, new_ref: Callable) -> list[Breach]:
    old, new = old_ref(old), new_ref(new)
    old_branches, new_branches = _branches(old), _branches(new)
    if set(old_branches) != set(new_branches):
        return [Breach(path or "<root>", "changed type", f"{_types(old_branches)} -> {_types(new_branches)}")]
    breaches = []
    for kind, old_branch in old_branches.items():
        breaches += _compare_one(old_ref(old_branch), new_ref(new_branches[kind]), path, old_ref, new_ref)
    return breaches


def _compare_one(old: Schema, new: Schema, path: str, old_ref: Callable, new_ref: Callable) -> list[Breach]:
    here = path or "<root>"
    breaches = []
    if "enum" in old or "enum" in new:
        removed = [v for v in old.get("enum", []) if v not in new.get("enum", [])]
        if removed or ("enum" in new and "enum" not in old):
            breaches.append(Breach(here, "narrowed enum", f"removed {removed}" if removed else "now an enum"))
    for keyword in _UPPER_BOUNDS:
        if keyword in new and (keyword not in old or new[keyword] < old[keyword]):
            breaches.append(Breach(here, "tightened constraint", f"{keyword} {old.get(keyword, 'none')} -> {new[keyword]}"))
    for keyword in _LOWER_BOUNDS:
        if keyword in new and (keyword not in old or new[keyword] > old[keyword]):
            breaches.append(Breach(here, "tightened constraint", f"{keyword} {old.get(keyword, 'none')} -> {new[keyword]}"))
    for keyword in _EXACT:
        if keyword in new and new[keyword] != old.get(keyword):
            breaches.append(Breach(here, "tightened constraint", f"{keyword} {old.get(keyword, 'none')!r} -> {new[keyword]!r}"))
    old_props, new_props = old.get("properties", {}), new.get("properties", {})
    old_required, new_required = set(old.get("required", [])), set(new.get("required", []))
    for name in old_props:
        if name not in new_props:
            breaches.append(Breach(_join(path, name), "removed property", "consumers may still read it"))
    for name in sorted(new_required - old_required):
        if name in old_props:
            breaches.append(Breach(_join(path, name), "optional property made required", "old records lack it"))
        else:
            breaches.append(Breach(_join(path, name), "added required property", "old records lack it"))
    for name in old_props:
        if name in new_props:
            breaches += _compare(old_props[name], new_props[name], _join(path, name), old_ref, new_ref)
    if "items" in old and "items" in new:
        breaches += _compare(old["items"], new["items"], f"{here}[]", old_ref, new_ref)
    return breaches


def _branches(schema: Schema) -> dict[str, Schema]:
    """The alternatives of a schema keyed by JSON type (`anyOf` of a type and null, or one type)."""
    options = schema.get("anyOf") or schema.get("oneOf") or [schema]
    return {_type_of(option, schema): option for option in options}


def _type_of(option: Schema, parent: Schema) -> str:
    if "$ref" in option:
        return "ref:" + option["$ref"].rsplit("/", 1)[-1]
    declared = option.get("type", parent.get("type"))
    if declared is None:
        return "object" if "properties" in option else "any"
    return declared if isinstance(declared, str) else "|".join(sorted(declared))


def _types(branches: Mapping[str, Schema]) -> str:
    return " or ".join(sorted(branches))


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
