"""Provisional SLA stamps for a new ticket (seed 000: assign within 1 h, respond 1 h after).

Plain clock time for now; the SLA issue replaces this with policies and
business calendars, keeping the same inputs recorded on the ticket event.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

ASSIGN_WITHIN = timedelta(hours=1)
RESPOND_WITHIN = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Stamps:
    assign_by: datetime
    respond_by: datetime
    policy: str

    def explain(self) -> dict[str, str]:
        """The inputs and results, as recorded on the ``stamped`` ticket event."""
        return {
            "policy": self.policy,
            "assign_by": self.assign_by.isoformat(),
            "respond_by": self.respond_by.isoformat(),
            "rule": "assign_by = received + 1h; respond_by = assign_by + 1h (provisional)",
        }


def initial_stamps(received_at: datetime) -> Stamps:
    """Deadlines for a ticket opened by a message received at ``received_at``."""
    if received_at.tzinfo is None:
        raise ValueError("received_at must be timezone-aware")
    assign_by = received_at + ASSIGN_WITHIN
    return Stamps(assign_by, assign_by + RESPOND_WITHIN, "default-clock")
