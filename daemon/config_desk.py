"""The desk's sections of the configuration: calendars, SLA policies, agents, outbound mail.

Part of reading the configuration in one place (``daemon.config.parse`` calls
``desk_sections``); kept apart because these sections are tables of tables that
the generic one-level reader of ``daemon.config`` does not fit. Calendars and
policies are built here into ``triage`` objects, so a bad duration or an unknown
calendar stops the daemon at start with the key named, never at 3 a.m. when a
deadline is first computed.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import timedelta
from typing import Any

from daemon.errors import ConfigError
from triage.calendar import ALWAYS_OPEN, Calendar, CalendarError, calendars_from_config
from triage.durations import Duration, DurationError
from triage.policy import (
    DEFAULT_CALENDARS,
    Policy,
    PolicyError,
    default_policies,
    policies_from_config,
)

SAMPLE = "buzon.example.toml"
DESK_SECTIONS = ("calendars", "sla", "agents", "outbound")
_TLS = ("none", "starttls", "tls")
_SLA_TABLES = {  # [sla.X] tables of strings, with an example each
    "teams": '"setup" = "setup" (department = team)',
    "tiers": '"@bigcorp.es" = "technicians" (customer address or @domain = tier)',
    "notify": '"*" = "desk-admins@example.com" (team or * = address)',
}


@dataclass(frozen=True, slots=True)
class SlaConfig:
    """``[sla]`` with ``[[sla.policies]]`` and ``[calendars.NAME]``: what deadlines are."""

    calendars: tuple[Calendar, ...] = ()
    policies: tuple[Policy, ...] = ()
    teams: tuple[tuple[str, str], ...] = ()  # (department, team)
    tiers: tuple[tuple[str, str], ...] = ()  # (customer address or @domain, tier)
    notify: tuple[tuple[str, str], ...] = ()  # (team or "*", address told of breaches)
    at_risk: float = 0.8  # share of a window after which sla.at_risk is logged
    reopen_within: str = "7d"  # a customer reply this soon after closing reopens the ticket
    interval: float = 30.0  # seconds between scheduler passes
    batch: int = 500  # due tickets handled per transaction

    def calendar(self, name: str) -> Calendar:
        for cal in self.calendars:
            if cal.name == name:
                return cal
        raise KeyError(name)

    def team_of(self, department: str) -> str:
        return dict(self.teams).get(department, department)

    def tier_of(self, customer: str) -> str:
        """The customer's tier: its address, then its ``@domain``; "" when unlisted."""
        table = dict(self.tiers)
        address = customer.lower()
        return table.get(address) or table.get("@" + address.rpartition("@")[2], "")

    def notify_for(self, team: str) -> str:
        table = dict(self.notify)
        return table.get(team) or table.get("*", "")

    @property
    def reopen_window(self) -> timedelta:
        """How long after closing a customer's reply reopens the ticket (wall-clock time)."""
        d = Duration.parse(self.reopen_within)
        if d.business:
            raise DurationError(
                f"{d} counts business time; use wall-clock minutes, hours or days, e.g. 7d"
            )
        return timedelta(**{{"m": "minutes", "h": "hours", "d": "days"}[d.unit]: d.amount})


@dataclass(frozen=True, slots=True)
class OutboundConfig:
    """``[outbound]``: the relay that delivers acknowledgements, follow-ups and replies."""

    relay: str = ""  # host:port; "" = mail waits in the outbox, unsent (warned at start)
    from_address: str = ""  # key "from"; "" = the first [smtp] address, else buzon@hostname
    from_name: str = "Soporte"
    envelope_from: str = ""  # "" = the null sender <>: bounces of our mail never loop
    tls: str = "none"  # none | starttls | tls
    username: str = ""
    password_file: str = ""
    timeout: float = 60.0
    max_attempts: int = 12
    retry_first: float = 60.0  # seconds before the first retry; doubles up to retry_max
    retry_max: float = 3600.0
    ack_per_day: float = 5.0  # acknowledgements per address per day (token bucket)
    templates: str = ""  # a directory whose files override the shipped templates
    # Seconds a sender holds the mail it claimed; each attempt gets half of it. With several
    # instances, how long the mail a dead sender had claimed waits before another sends it.
    lease: float = 300.0

    @property
    def host(self) -> str:
        return self.relay.rsplit(":", 1)[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.relay.rsplit(":", 1)[1])


def default_sla() -> SlaConfig:
    """Seed 000's policies on the shipped calendars (triage/rules/sla_default.toml)."""
    return SlaConfig(
        calendars=tuple({ALWAYS_OPEN.name: ALWAYS_OPEN, **DEFAULT_CALENDARS}.values()),
        policies=default_policies(),
    )


@dataclass(frozen=True, slots=True)
class DeskConfig:
    """The four desk sections, as ``daemon.config.Config`` carries them."""

    sla: SlaConfig = field(default_factory=default_sla)
    agents: tuple[tuple[str, str], ...] = ()  # (address, agent name)
    outbound: OutboundConfig = field(default_factory=OutboundConfig)


def desk_sections(data: Mapping[str, Any]) -> DeskConfig:
    """Build the desk sections present in the parsed TOML ``data``; others keep defaults."""
    calendars = _calendars(data.get("calendars", {}))
    sla = _sla(data.get("sla", {}), calendars)
    return DeskConfig(
        sla=sla,
        agents=_agents(data.get("agents", {})),
        outbound=_outbound(data.get("outbound", {})),
    )


def _calendars(value: Any) -> dict[str, Calendar]:
    if not isinstance(value, dict):
        raise ConfigError("[calendars] must be tables: [calendars.office] with timezone, hours")
    merged: dict[str, Calendar] = {ALWAYS_OPEN.name: ALWAYS_OPEN, **DEFAULT_CALENDARS}
    try:
        merged.update(calendars_from_config(value))
    except CalendarError as exc:
        raise ConfigError(str(exc)) from exc
    return merged


def _pairs(where: str, value: Any, example: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in value.items()
    ):
        raise ConfigError(f"{where}: expected a table of strings, e.g. {example}")
    return tuple((k.strip().lower() if "@" in k else k.strip(), v) for k, v in value.items())


def _sla(value: Any, calendars: dict[str, Calendar]) -> SlaConfig:
    if not isinstance(value, dict):
        raise ConfigError("[sla] must be a table (an [sla] header)")
    base = SlaConfig(calendars=tuple(calendars.values()), policies=default_policies())
    known = [f.name for f in fields(SlaConfig) if f.name != "calendars"]
    values: dict[str, Any] = {}
    for key, item in value.items():
        if key == "policies":
            if not isinstance(item, list):
                raise ConfigError("[sla] policies: write each policy as an [[sla.policies]] table")
            try:
                values["policies"] = policies_from_config(item, calendars)
            except PolicyError as exc:
                raise ConfigError(str(exc)) from exc
        elif key in _SLA_TABLES:
            values[key] = _pairs(f"[sla.{key}]", item, _SLA_TABLES[key])
        elif key in known:
            values[key] = coerce(f"[sla] {key}", item, getattr(base, key))
        else:
            raise ConfigError(f"[sla] {key}: unknown key; {suggest(key, known)}(see {SAMPLE})")
    sla = replace(base, **values)
    if not 0 < sla.at_risk < 1:
        raise ConfigError("[sla] at_risk: a fraction between 0 and 1, e.g. 0.8 (80 % of a window)")
    if sla.interval <= 0 or sla.batch < 1:
        raise ConfigError("[sla] interval and batch: use a positive number of seconds and rows")
    try:
        sla.reopen_window  # noqa: B018 - parsed here so a typo fails at start
    except DurationError as exc:
        raise ConfigError(f"[sla] reopen_within: {exc}") from exc
    return sla


def _agents(value: Any) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict):
        raise ConfigError('[agents]: expected address = name, e.g. "ana@desk.example.com" = "ana"')
    pairs = _pairs("[agents]", value, '"ana@desk.example.com" = "ana"')
    for address, _ in pairs:
        if "@" not in address:
            raise ConfigError(f"[agents] {address!r}: the key is the agent's mail address")
    return pairs


def _outbound(value: Any) -> OutboundConfig:
    if not isinstance(value, dict):
        raise ConfigError("[outbound] must be a table (an [outbound] header)")
    base = OutboundConfig()
    known = [f.name for f in fields(OutboundConfig)]
    values: dict[str, Any] = {}
    for key, item in value.items():
        name = "from_address" if key == "from" else key
        if name not in known or key == "from_address":
            shown = ["from" if k == "from_address" else k for k in known]
            raise ConfigError(
                f"[outbound] {key}: unknown key; {suggest(key, shown)}"
                f"the keys of [outbound] are {', '.join(shown)} (see {SAMPLE})"
            )
        values[name] = coerce(f"[outbound] {key}", item, getattr(base, name))
    out = replace(base, **values)
    if out.relay and (":" not in out.relay or not out.relay.rsplit(":", 1)[1].isdigit()):
        raise ConfigError(f"[outbound] relay = {out.relay!r}: use host:port, e.g. 127.0.0.1:25")
    if out.tls not in _TLS:
        raise ConfigError(f"[outbound] tls = {out.tls!r}: use one of {', '.join(_TLS)}")
    if out.from_address and "@" not in out.from_address:
        raise ConfigError(f"[outbound] from = {out.from_address!r}: use a mail address")
    if out.max_attempts < 1 or out.retry_first <= 0 or out.retry_max < out.retry_first:
        raise ConfigError("[outbound] max_attempts >= 1 and 0 < retry_first <= retry_max (seconds)")
    if out.ack_per_day <= 0:
        raise ConfigError("[outbound] ack_per_day: use a positive number, e.g. 5")
    if out.lease < 2 * out.timeout:
        raise ConfigError(
            f"[outbound] lease = {out.lease}: use at least twice timeout ({out.timeout}), "
            "since each attempt gets half the lease; the default is 300"
        )
    return out


def coerce(where: str, value: Any, default: Any) -> Any:
    """Check ``value`` has the type of ``default`` (the field's declared type)."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string in quotes, got {value!r}")
        return value
    if isinstance(default, tuple):
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f'{where}: expected a list of strings, e.g. ["a", "b"]')
        return tuple(value)
    raise AssertionError(f"unsupported config type for {where}")  # pragma: no cover


def suggest(key: str, known: list[str]) -> str:
    """A "did you mean" for a mistyped key, or nothing."""
    close = difflib.get_close_matches(key, known, n=1)
    return f"did you mean {close[0]!r}? " if close else ""


def redacted_desk(desk: DeskConfig) -> dict[str, Any]:
    """The effective desk sections as plain data for ``check-config``; no secret values."""
    sla = desk.sla
    return {
        "calendars": {c.name: c.to_config() for c in sla.calendars},
        "sla": {
            "at_risk": sla.at_risk,
            "reopen_within": sla.reopen_within,
            "interval": sla.interval,
            "batch": sla.batch,
            "teams": dict(sla.teams),
            "tiers": dict(sla.tiers),
            "notify": dict(sla.notify),
            "policies": [p.name for p in sla.policies],
        },
        "agents": dict(desk.agents),
        "outbound": {f.name: getattr(desk.outbound, f.name) for f in fields(OutboundConfig)},
    }
