"""Recompute the timeline hash chains of a closure database; exit 1 naming the first broken entry.

Each chain must also end where its anchored head (length and newest hash) says, so entries cut
off the end are caught too; a chain without a head is reported as broken.

    python -m services.closure.verify_chain --database-url URL [--incident ID]
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from sqlalchemy.ext.asyncio import create_async_engine

from services.closure import repository as repo
from services.closure.domain import BrokenLink, first_broken_link


async def check_chains(database_url: str, incident_id: str | None = None) -> tuple[int, BrokenLink | None]:
    """Check one incident's chain or every chain; return how many were checked and the first break."""
    # A plain engine, not the service's: the check only reads and must not take SQLite's write lock.
    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as conn:
            incident_ids = [incident_id] if incident_id else await repo.incidents_with_timeline(conn)
            for checked, current in enumerate(incident_ids, start=1):
                entries = await repo.timeline_of(conn, current)
                head = await repo.head_of_timeline(conn, current)
                if not entries and head is None:
                    # Only reachable with --incident: closure never recorded anything for it.
                    return checked, BrokenLink(current, 0, "no timeline entries for this incident")
                if head is None:
                    return checked, BrokenLink(current, len(entries), "no anchored head for this chain")
                broken = first_broken_link(entries, head)
                if broken is not None:
                    return checked, broken
            return len(incident_ids), None
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m services.closure.verify_chain", description=__doc__)
    parser.add_argument("--database-url", required=True, help="SQLAlchemy async URL of the closure database")
    parser.add_argument("--incident", help="check only this incident's timeline")
    args = parser.parse_args(argv)
    checked, broken = asyncio.run(check_chains(args.database_url, args.incident))
    if broken is not None:
        print(f"BROKEN incident {broken.incident_id} seq {broken.seq}: {broken.reason}", file=sys.stderr)
        return 1
    print(f"OK: {checked} timeline(s) verified")
    return 0


if __name__ == "__main__":
    sys.exit(main())
