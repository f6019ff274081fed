"""Shared runtime every service imports: clock, settings, database, outbox, consumers, HTTP host."""
