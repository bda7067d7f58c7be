"""What a pipeline step receives: the ``Work`` for one spool entry, and ``Done``.

A step takes the ``Work`` and either updates it or raises ``Done`` (control
flow, not an error) to end the pipeline early, e.g. for a duplicate delivery.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session
from structlog.typing import FilteringBoundLogger

from daemon.config import MatchingConfig
from daemon.config_desk import DeskConfig
from daemon.outbound import reply_token_key
from daemon.triager import Triager
from parsers import ParsedMessage
from storage.blobs import BlobStore
from storage.models import Attachment, Message, Ticket, Voicemail
from storage.settings import Permanent

if TYPE_CHECKING:
    from daemon.outbound import Outbound


class Done(Exception):
    """Raised by a step to end the pipeline successfully; not an error."""


@dataclass(frozen=True)
class JoinedIncident:
    """The incident a message's ticket joined, for the last step to count in its row."""

    incident_id: int
    logged: dict[str, Any]  # the ``incident.updated`` log fields that step completes
    # (id, customer) of earlier tickets linked along with this one (``daemon.similar``).
    swept: tuple[tuple[int, str], ...] = ()


@dataclass
class Work:
    """Everything known about one spool entry while it goes through the pipeline."""

    spool_id: str
    raw: bytes
    sha256: str
    source: str
    envelope: dict[str, Any]
    received_at: datetime
    parsed: ParsedMessage | None
    quarantine_reason: str
    session: Session
    blobs: BlobStore
    now: datetime
    log: FilteringBoundLogger
    message: Message | None = None
    attachments: list[Attachment] = field(default_factory=list)
    voicemail: Voicemail | None = None
    ticket: Ticket | None = None
    triager: Triager | None = None
    matching: MatchingConfig = field(default_factory=MatchingConfig)
    desk: DeskConfig = field(default_factory=DeskConfig)
    outbound: Outbound | None = None  # None: nothing is acknowledged (one-shot commands)
    # The thread step's verdict on the sender, read again by the duplicate step:
    # the customer they are an authorised contact of, and why they cannot be trusted.
    sender_customer: str = ""
    distrust: str = ""
    agent: str = ""  # the desk's name for the sender when they are one of its agents
    fingerprint: str = ""  # triage.similarity.fingerprint of subject and own text
    # The reply-token key (``daemon.ticketops.reply_key``): the processor's, kept once read.
    reply_keys: Permanent = field(default_factory=reply_token_key)
    opened: bool = False  # this message opened its ticket
    flags_raised: tuple[str, ...] = ()  # this message's own flags (a chase leaves clocks alone)
    joined_incident: JoinedIncident | None = None  # counted by ``similar.count_incident``
    outcome: str = ""
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


Step = Callable[[Work], None]
