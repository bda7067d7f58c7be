"""Reply tokens: a ticket reference signed with the instance's key, for our own mail.

Buzón puts a token such as ``b-42.kq3xv7pd`` in the Message-ID of every mail it
sends and in the Reply-To plus-address (``support+b-42.kq3xv7pd@example.com``).
A reply names the token in In-Reply-To/References or sends to the plus-address,
so it finds its ticket even when the customer's client dropped the subject tag.

The signature (HMAC-SHA256 under a key kept in the database) means a customer
cannot make a token for somebody else's ticket by changing the number: only
tokens Buzón issued verify. Tokens are lower case base32, because some MTAs
lower-case local parts; 40 bits of signature are plenty against guessing when
a wrong guess only opens a new ticket.
"""

from __future__ import annotations

import base64
import hmac
import re
import secrets
from dataclasses import dataclass

from triage.refs import PREFIX

_TOKEN = re.compile(r"(?<![a-z0-9])b-(\d{1,18})\.([a-z2-7]{8})(?![a-z0-9])", re.IGNORECASE)
_MESSAGE_ID_LABEL = "buzon"


def new_key() -> str:
    """A fresh random key, as stored in the settings table."""
    return secrets.token_hex(32)


def _mac(key: str, ref: str) -> str:
    digest = hmac.digest(key.encode(), ref.upper().encode(), "sha256")  # one-shot: C, no object
    return base64.b32encode(digest[:5]).decode().lower()


def token_for(ref: str, key: str) -> str:
    """The token for ticket ``ref`` (``B-42`` -> ``b-42.kq3xv7pd``)."""
    return f"{ref.lower()}.{_mac(key, ref)}"


def message_id_for(ref: str, key: str, unique: str, domain: str) -> str:
    """An outgoing Message-ID (without angle brackets) that carries the ticket's token."""
    return f"{token_for(ref, key)}.{unique}.{_MESSAGE_ID_LABEL}@{domain}"


def plus_address(address: str, ref: str, key: str) -> str:
    """``support@example.com`` -> ``support+b-42.kq3xv7pd@example.com``."""
    local, _, domain = address.rpartition("@")
    return f"{local}+{token_for(ref, key)}@{domain}"


@dataclass(frozen=True, slots=True)
class FoundToken:
    """A token found in a message: which ticket it names and whether it is ours."""

    ref: str  # upper case, e.g. "B-42"
    valid: bool  # the signature verifies under our key
    where: str  # "message-id" | "in-reply-to" | "references" | "recipient"


def find(key: str, where: str, values: tuple[str, ...] | list[str]) -> list[FoundToken]:
    """Every token in ``values`` (Message-IDs or addresses), checked against ``key``."""
    found: list[FoundToken] = []
    for value in values[:200]:
        text = value
        if where == "recipient":
            local = value.rpartition("@")[0]
            if "+" not in local:
                continue
            text = local.partition("+")[2]
        for match in _TOKEN.finditer(text):
            ref = f"{PREFIX}{int(match.group(1))}"
            valid = hmac.compare_digest(_mac(key, ref), match.group(2).lower())
            found.append(FoundToken(ref, valid, where))
    return found


def is_ours(message_id: str, key: str) -> bool:
    """Whether ``message_id`` is one Buzón issued (its token verifies): our mail came back."""
    if f".{_MESSAGE_ID_LABEL}@" not in message_id.lower():
        return False
    return any(t.valid for t in find(key, "message-id", [message_id.partition("@")[0]]))
