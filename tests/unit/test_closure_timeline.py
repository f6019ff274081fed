"""Closure timeline: the hash chain verifies, and any edit, gap or reordering is caught."""

from __future__ import annotations

import dataclasses

from services.closure.domain import GENESIS_HASH, ChainHead, TimelineEntry, first_broken_link, head_of, next_entry
from services.runtime.clock import FakeClock


def chain(length: int) -> list[TimelineEntry]:
    clock = FakeClock()
    entries: list[TimelineEntry] = []
    for index in range(length):
        entries.append(
            next_entry(
                entries[-1] if entries else None,
                incident_id="inc-1",
                at=clock.advance(60),
                event_type="HandoffResolved",
                event_id=f"00000000-0000-0000-0000-{index:012d}",
                summary={"handoff_id": f"h{index}", "disposition": "resolved"},
            )
        )
    return entries


def test_a_fresh_chain_starts_at_genesis_and_verifies() -> None:
    entries = chain(4)
    assert entries[0].seq == 1 and entries[0].prev_hash == GENESIS_HASH
    assert [e.prev_hash for e in entries[1:]] == [e.hash for e in entries[:-1]]
    assert first_broken_link(entries) is None


def test_an_edited_summary_is_caught_at_that_entry() -> None:
    entries = chain(4)
    entries[2] = dataclasses.replace(entries[2], summary={"handoff_id": "h2", "disposition": "unfounded"})
    broken = first_broken_link(entries)
    assert broken is not None and broken.seq == 3 and "edited" in broken.reason


def test_an_edit_with_a_recomputed_hash_breaks_the_next_link() -> None:
    entries = chain(4)
    forged = next_entry(
        entries[0],
        incident_id="inc-1",
        at=entries[1].at,
        event_type="HandoffResolved",
        event_id=entries[1].event_id,
        summary={"handoff_id": "h1", "disposition": "unfounded"},
    )
    entries[1] = forged
    broken = first_broken_link(entries)
    assert broken is not None and broken.seq == 3 and "prev_hash" in broken.reason


def test_a_deleted_entry_is_caught() -> None:
    entries = chain(4)
    del entries[1]
    broken = first_broken_link(entries)
    assert broken is not None and broken.seq == 3


def test_an_empty_timeline_has_nothing_broken() -> None:
    assert first_broken_link([]) is None


def test_a_chain_ending_at_its_anchored_head_verifies() -> None:
    entries = chain(4)
    head = head_of(entries)
    assert head == ChainHead("inc-1", 4, entries[-1].hash)
    assert first_broken_link(entries, head) is None


def test_entries_cut_off_the_end_are_caught_by_the_head() -> None:
    entries = chain(4)
    head = head_of(entries)
    assert first_broken_link(entries[:2]) is None  # the chain alone cannot tell
    broken = first_broken_link(entries[:2], head)
    assert broken is not None and broken.seq == 3 and "truncated" in broken.reason
    gone = first_broken_link([], head)
    assert gone is not None and "4 entries, 0 remain" in gone.reason


def test_a_replaced_tail_does_not_match_the_head() -> None:
    entries = chain(4)
    head = head_of(entries)
    forged = next_entry(
        entries[2], incident_id="inc-1", at=entries[3].at, event_type="HandoffResolved",
        event_id=entries[3].event_id, summary={"handoff_id": "h3", "disposition": "unfounded"},
    )
    broken = first_broken_link([*entries[:3], forged], head)
    assert broken is not None and broken.seq == 4 and "head" in broken.reason
