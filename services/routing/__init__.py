"""Routing (分流 → 报到): summons units by the responsibility list and follows each handoff to its end."""
