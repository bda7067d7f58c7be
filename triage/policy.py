"""SLA policies: which clocks a ticket runs on, chosen from its team, priority, severity, channel
and tier, read from ``[[sla.policies]]`` tables with errors that name the key and the fix.

API::

    Policy(name=..., calendar="24x7", teams=(), ..., assign_within=..., respond_within=...,
           followup_response_within=..., customer_followup_every=None,
           max_customer_followups=0, auto_close_after=None)     # keyword-only
    TicketFacts(team, category, priority, severity, channel, tier)
    select(policies, facts) -> Selection(policy, reason)
    policies_from_config(tables, calendars) -> tuple[Policy, ...]
    default_policies() -> tuple[Policy, ...];  DEFAULT_CALENDARS  # triage/rules/sla_default.toml
    PolicyError(ValueError)                                       # "key: problem; fix"

Decisions:

* Selection: policies *with* selectors are tried in order and the first match wins; a policy
  without selectors is a fallback, used only when none matches (the last one, if several).
  So the catch-all may sit anywhere in the list and never shadows a specific policy.
* A configured list must have a fallback: a ticket that matches nothing would otherwise have
  no deadlines, and that mistake belongs at start-up, not at 3 a.m. in the scheduler.
* Clock durations have no defaults: an SLA is a promise to customers, so every policy states
  its own. ``max_customer_followups`` is required once ``customer_followup_every`` is set.
* Selector values compare case-insensitively; an empty list is refused (leave the key out
  to match anything), so ``teams = []`` cannot silently turn a policy into a catch-all.
"""

from __future__ import annotations

import difflib
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from types import MappingProxyType
from typing import Any, cast

from triage.calendar import ALWAYS_OPEN, Calendar, calendars_from_config
from triage.durations import Duration, DurationError

__all__ = [
    "CHANNELS",
    "DEFAULT_CALENDARS",
    "PRIORITIES",
    "SHIPPED_PATH",
    "Policy",
    "PolicyError",
    "Selection",
    "TicketFacts",
    "default_policies",
    "policies_from_config",
    "select",
]

PRIORITIES = ("low", "medium", "high")
CHANNELS = ("email", "voicemail")
SEVERITIES = (1, 2, 3, 4, 5)
SHIPPED_PATH = "rules/sla_default.toml"  # inside the triage package
_SELECTORS = (
    ("team", "teams"),
    ("priority", "priorities"),
    ("severity", "severities"),
    ("channel", "channels"),
    ("tier", "tiers"),
)
_CLOCKS = ("assign_within", "respond_within", "followup_response_within")
_OPTIONAL_CLOCKS = ("customer_followup_every", "auto_close_after")
_KEYS = (
    "name",
    "calendar",
    *(k for pair in _SELECTORS for k in pair),
    *_CLOCKS,
    *_OPTIONAL_CLOCKS,
    "max_customer_followups",
)
_EXAMPLE = (
    "[[sla.policies]] name = 'support', calendar = 'office', assign_within = '1h', "
    "respond_within = '1h', followup_response_within = '24h'"
)


class PolicyError(ValueError):
    """Raised when a policy's configuration is wrong, or no policy fits a ticket."""

    def __init__(self, key: str, problem: str) -> None:
        self.key = key
        self.problem = problem
        super().__init__(f"{key}: {problem}" if key else problem)


@dataclass(frozen=True, slots=True)
class TicketFacts:
    """What policy selection looks at: the triage results and the customer's tier."""

    team: str
    category: str
    priority: str
    severity: int | None
    channel: str
    tier: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Policy:
    """Which tickets a policy takes (empty selector = any) and the clocks it runs."""

    name: str
    calendar: str = ALWAYS_OPEN.name
    teams: tuple[str, ...] = ()  # matches the ticket's team or its category (department)
    priorities: tuple[str, ...] = ()
    severities: tuple[int, ...] = ()
    channels: tuple[str, ...] = ()
    tiers: tuple[str, ...] = ()
    assign_within: Duration
    respond_within: Duration  # counted from the assignment (seed 000)
    followup_response_within: Duration  # a customer's follow-up on an open ticket
    customer_followup_every: Duration | None = None
    max_customer_followups: int = 0
    auto_close_after: Duration | None = None

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise PolicyError("name", "must not be empty")
        for field_name in ("teams", "priorities", "channels", "tiers"):
            lowered = tuple(v.strip().lower() for v in getattr(self, field_name))
            object.__setattr__(self, field_name, lowered)
        _check_choices(self.priorities, PRIORITIES, "priorities")
        _check_choices(self.channels, CHANNELS, "channels")
        _check_choices(self.severities, SEVERITIES, "severities")
        if self.max_customer_followups < 0:
            raise PolicyError("max_customer_followups", "must be 0 or more")

    @property
    def is_fallback(self) -> bool:
        """Whether this policy has no selectors, so it can take any ticket."""
        return not any((self.teams, self.priorities, self.severities, self.channels, self.tiers))

    def matches(self, facts: TicketFacts) -> tuple[str, ...] | None:
        """The selectors that ``facts`` satisfy, in words; None when one of them fails."""
        said: list[str] = []
        if self.teams:
            # Seed 002: the customer picks a department, so a team name may be a category.
            for label, value in (("team", facts.team), ("category", facts.category)):
                if value.strip().lower() in self.teams:
                    said.append(f"{label} {value}")
                    break
            else:
                return None
        for label, wanted, value in (
            ("priority", self.priorities, facts.priority),
            ("channel", self.channels, facts.channel),
            ("tier", self.tiers, facts.tier),
        ):
            if wanted and value.strip().lower() not in wanted:
                return None
            if wanted:
                said.append(f"{label} {value}")
        if self.severities:
            if facts.severity not in self.severities:
                return None
            said.append(f"severity {facts.severity}")
        return tuple(said)


@dataclass(frozen=True, slots=True)
class Selection:
    """The policy a ticket runs on, and why (recorded on the ticket for admins)."""

    policy: Policy
    reason: str


def select(policies: Sequence[Policy], facts: TicketFacts) -> Selection:
    """The first policy with selectors that matches ``facts``, else the last fallback."""
    for policy in policies:
        if policy.is_fallback:
            continue
        matched = policy.matches(facts)
        if matched is not None:
            return Selection(policy, f"policy {policy.name!r} (first match: {', '.join(matched)})")
    fallbacks = [p for p in policies if p.is_fallback]
    if fallbacks:
        chosen = fallbacks[-1]
        return Selection(
            chosen,
            f"policy {chosen.name!r} (default: no policy with selectors matches "
            f"{_describe(facts)})",
        )
    raise PolicyError(
        "sla.policies",
        f"no policy matches {_describe(facts)} and none is a default; "
        "add a last policy without selectors",
    )


def _describe(facts: TicketFacts) -> str:
    return (
        f"team {facts.team!r}, category {facts.category!r}, priority {facts.priority!r}, "
        f"severity {facts.severity}, channel {facts.channel!r}, tier {facts.tier!r}"
    )


def _check_choices(values: Sequence[object], allowed: Sequence[object], key: str) -> None:
    for value in values:
        if value not in allowed or isinstance(value, bool):
            options = ", ".join(repr(a) for a in allowed)
            raise PolicyError(key, f"{value!r} is not one of {options}")


# -- Reading configuration ------------------------------------------------------------------


def policies_from_config(
    tables: Sequence[Mapping[str, Any]], calendars: Mapping[str, Calendar]
) -> tuple[Policy, ...]:
    """The policies of a config's ``[[sla.policies]]`` list, checked against its calendars."""
    if not isinstance(tables, Sequence) or isinstance(tables, str):
        raise PolicyError("sla.policies", f"must be a list of tables; e.g. {_EXAMPLE}")
    if not tables:
        raise PolicyError("sla.policies", f"is empty; give at least one policy, e.g. {_EXAMPLE}")
    policies = tuple(_policy(i, t, calendars) for i, t in enumerate(tables))
    seen: dict[str, int] = {}
    for i, policy in enumerate(policies):
        if policy.name in seen:
            raise PolicyError(
                f"sla.policies[{i}].name",
                f"{policy.name!r} is already the name of sla.policies[{seen[policy.name]}]; "
                "names identify policies on tickets, so give each its own",
            )
        seen[policy.name] = i
    if not any(p.is_fallback for p in policies):
        raise PolicyError(
            "sla.policies",
            "every policy has selectors, so a ticket matching none would get no deadlines; "
            "add a last policy without team/priority/severity/channel/tier",
        )
    return policies


def _policy(i: int, table: Mapping[str, Any], calendars: Mapping[str, Calendar]) -> Policy:
    key = f"sla.policies[{i}]"
    if not isinstance(table, Mapping):
        raise PolicyError(key, f"must be a table; e.g. {_EXAMPLE}")
    _check_keys(table, key)
    name = table.get("name")
    if not isinstance(name, str) or not name.strip():
        raise PolicyError(f"{key}.name", "missing or empty; give a name such as 'support'")
    every = _optional_duration(table, key, "customer_followup_every")
    return Policy(
        name=name.strip(),
        calendar=_calendar(table, key, calendars),
        teams=_words(table, key, "team", "teams", None),
        priorities=_words(table, key, "priority", "priorities", PRIORITIES),
        severities=_severities(table, key),
        channels=_words(table, key, "channel", "channels", CHANNELS),
        tiers=_words(table, key, "tier", "tiers", None),
        assign_within=_duration(table, key, "assign_within"),
        respond_within=_duration(table, key, "respond_within"),
        followup_response_within=_duration(table, key, "followup_response_within"),
        customer_followup_every=every,
        max_customer_followups=_max_followups(table, key, required=every is not None),
        auto_close_after=_optional_duration(table, key, "auto_close_after"),
    )


def _check_keys(table: Mapping[str, Any], key: str) -> None:
    unknown = sorted(set(table) - set(_KEYS))
    if unknown:
        said = ", ".join(f"{k!r}{_did_you_mean(k, _KEYS)}" for k in unknown)
        raise PolicyError(key, f"unknown key {said}; accepted keys: {', '.join(_KEYS)}")
    for one, many in _SELECTORS:
        if one in table and many in table:
            raise PolicyError(f"{key}.{many}", f"give {one!r} or {many!r}, not both")


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    near = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {near[0]!r}?)" if near else ""


def _calendar(table: Mapping[str, Any], key: str, calendars: Mapping[str, Calendar]) -> str:
    value = table.get("calendar", ALWAYS_OPEN.name)
    known = sorted(calendars)
    if not isinstance(value, str) or value not in calendars:
        hint = _did_you_mean(value, known) if isinstance(value, str) else ""
        raise PolicyError(
            f"{key}.calendar",
            f"unknown calendar {value!r}{hint}; known calendars: {', '.join(known)} "
            "(define others under [calendars.NAME])",
        )
    return value


def _listed(table: Mapping[str, Any], key: str, one: str, many: str) -> list[Any] | None:
    """The selector's values, from the singular or plural key; None when neither is given."""
    if one in table:
        value = table[one]
        return value if isinstance(value, list) else [value]
    if many not in table:
        return None
    value = table[many]
    if not isinstance(value, list):
        raise PolicyError(f"{key}.{many}", f"must be a list, e.g. {many} = [...]; got {value!r}")
    if not value:
        raise PolicyError(f"{key}.{many}", f"is empty; leave {many!r} out to match any {one}")
    return value


def _words(
    table: Mapping[str, Any], key: str, one: str, many: str, allowed: Sequence[str] | None
) -> tuple[str, ...]:
    values = _listed(table, key, one, many)
    if values is None:
        return ()
    where = f"{key}.{one if one in table else many}"
    out: list[str] = []
    for value in values:
        if not isinstance(value, str) or not value.strip():
            raise PolicyError(where, f"{value!r} is not a {one} name; write a non-empty string")
        word = value.strip().lower()
        if allowed is not None and word not in allowed:
            raise PolicyError(
                where,
                f"unknown {one} {value!r}{_did_you_mean(word, allowed)}; use {', '.join(allowed)}",
            )
        out.append(word)
    return tuple(out)


def _severities(table: Mapping[str, Any], key: str) -> tuple[int, ...]:
    values = _listed(table, key, "severity", "severities")
    if values is None:
        return ()
    where = f"{key}.{'severity' if 'severity' in table else 'severities'}"
    for value in values:
        if isinstance(value, bool) or value not in SEVERITIES:
            raise PolicyError(
                where, f"{value!r} is not a severity; use whole numbers 1 (critical) to 5"
            )
    return tuple(cast(list[int], values))


def _duration(table: Mapping[str, Any], key: str, name: str) -> Duration:
    if name not in table:
        raise PolicyError(
            f"{key}.{name}",
            "missing; every policy states its own clocks, e.g. "
            f"{name} = '1h' (wall clock) or '4bh' (business hours)",
        )
    return _parse_duration(table[name], f"{key}.{name}")


def _optional_duration(table: Mapping[str, Any], key: str, name: str) -> Duration | None:
    value = table.get(name, "")
    if value == "":
        return None
    return _parse_duration(value, f"{key}.{name}")


def _parse_duration(value: object, where: str) -> Duration:
    if not isinstance(value, str):
        raise PolicyError(where, f"must be a string such as '1h' or '4bd', got {value!r}")
    try:
        return Duration.parse(value)
    except DurationError as err:
        raise PolicyError(where, str(err)) from None


def _max_followups(table: Mapping[str, Any], key: str, *, required: bool) -> int:
    where = f"{key}.max_customer_followups"
    if "max_customer_followups" not in table:
        if required:
            raise PolicyError(
                where,
                "missing; customer_followup_every is set, so say how many follow-ups to "
                "send before waiting for auto-close, e.g. max_customer_followups = 5",
            )
        return 0
    value = table["max_customer_followups"]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise PolicyError(where, f"must be a whole number, 0 or more; got {value!r}")
    return value


# -- The shipped defaults ------------------------------------------------------------------


def _load_shipped() -> tuple[Mapping[str, Calendar], tuple[Policy, ...]]:
    """Read the package's own rules file (package data, not configuration I/O)."""
    text = resources.files("triage").joinpath(SHIPPED_PATH).read_text(encoding="utf-8")
    data = tomllib.loads(text)
    calendars = MappingProxyType(calendars_from_config(data["calendars"]))
    return calendars, policies_from_config(data["sla"]["policies"], calendars)


# Loaded once at import: the file is small, and a broken shipped file should fail loudly and
# early (its holidays are only computed on first use, so this costs no date arithmetic).
DEFAULT_CALENDARS, _DEFAULT_POLICIES = _load_shipped()


def default_policies() -> tuple[Policy, ...]:
    """The shipped policies of seed 000 (technicians, setup, support), in selection order."""
    return _DEFAULT_POLICIES
