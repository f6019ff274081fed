"""SLA timer (限时): arms, warns, breaches, pauses and cancels the deadlines of every handoff."""
