"""Closure (反馈, 限时办结): readiness, verification, feedback, honest closing and the incident timeline."""
