"""Reference data tools for operators: check a YAML file or CSV directory, or export the demo city.

    python -m services.routing.reference check PATH        # errors (file:line: column: message) or a summary
    python -m services.routing.reference export-demo DIR   # the demo city as CSV files, to edit
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from contracts.reference import ReferenceData, ReferenceDataError, demo_city, load_reference_data, write_reference_csv
from services.routing.domain import RoutingIndex


def summary(ref: ReferenceData) -> str:
    """Counts and versions of a reference data set, one line per fact."""
    counts = ", ".join(
        f"{len(getattr(ref, section))} {section}"
        for section in ("districts", "stations", "communities", "grids", "officers", "units", "departments", "responsibilities")
    )
    lines = [f"reference data {ref.version}: {counts}"]
    if ref.roster is None:
        lines.append("roster: none (every unit counts as always on duty)")
    else:
        shifts = sum(len(e.shifts) for e in ref.roster.entries)
        lines.append(
            f"roster {ref.roster.version} ({ref.roster.timezone}): {len(ref.roster.entries)} entries, {shifts} shifts"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 valid, 1 invalid)."""
    parser = argparse.ArgumentParser(prog="python -m services.routing.reference", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="validate a YAML/JSON file or a directory of CSV files")
    check.add_argument("path")
    export = commands.add_parser("export-demo", help="write the demo city as a directory of CSV files")
    export.add_argument("directory")
    args = parser.parse_args(argv)
    if args.command == "export-demo":
        print(f"wrote {write_reference_csv(demo_city(), args.directory)}")
        return 0
    try:
        ref = load_reference_data(args.path)
        # The same index routing builds at start, so anything that would stop the service shows here.
        RoutingIndex(ref)
    except ReferenceDataError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"invalid reference data {args.path}: {exc}", file=sys.stderr)
        return 1
    print(summary(ref))
    return 0


if __name__ == "__main__":
    sys.exit(main())
