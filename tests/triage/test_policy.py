"""SLA policies: the shipped seed-000 defaults, first-match selection, and config errors."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from importlib import resources
from typing import Any

import pytest

from triage.calendar import ALWAYS_OPEN
from triage.durations import Duration
from triage.policy import (
    DEFAULT_CALENDARS,
    SHIPPED_PATH,
    Policy,
    PolicyError,
    TicketFacts,
    default_policies,
    policies_from_config,
    select,
)

CLOCKS = {"assign_within": "1h", "respond_within": "1h", "followup_response_within": "24h"}


def table(name: str, **keys: Any) -> dict[str, Any]:
    return {"name": name, **CLOCKS, **keys}


def facts(
    team: str = "general",
    category: str = "technical",
    priority: str = "medium",
    severity: int | None = None,
    channel: str = "email",
    tier: str = "standard",
) -> TicketFacts:
    return TicketFacts(team, category, priority, severity, channel, tier)


def by_name(policies: tuple[Policy, ...]) -> dict[str, Policy]:
    return {p.name: p for p in policies}


def seed_004_example() -> str:
    """The commented seed-004 block of the shipped file, uncommented as an admin would."""
    text = resources.files("triage").joinpath(SHIPPED_PATH).read_text(encoding="utf-8")
    block = text.split("# --- seed 004 example: begin")[1].split("# --- seed 004 example: end")[0]
    lines = block.splitlines()[1:]
    return "\n".join(line.removeprefix("#").removeprefix(" ") for line in lines)


# -- The shipped defaults ----------------------------------------------------------------


def test_defaults_reproduce_seed_000_tiers_in_selection_order() -> None:
    """technicians (tier), setup (team) and the support fallback carry seed 000's clocks."""
    policies = default_policies()
    assert [p.name for p in policies] == ["technicians", "setup", "support"]
    named = by_name(policies)
    setup, support = named["setup"], named["support"]
    assert setup.teams == ("setup",)
    assert (setup.assign_within, setup.respond_within) == (Duration(24, "h"), Duration(24, "h"))
    assert setup.followup_response_within == Duration(24, "h")
    assert setup.customer_followup_every == Duration(4, "bd")
    assert setup.auto_close_after == Duration(24, "bd")
    assert support.is_fallback
    assert (support.assign_within, support.respond_within) == (Duration(1, "bh"), Duration(1, "bh"))
    assert support.followup_response_within == Duration(24, "h")
    assert support.customer_followup_every == Duration(4, "bd")
    assert support.auto_close_after == Duration(72, "h")
    assert named["technicians"].tiers == ("technicians",)
    assert all(p.calendar == "office" for p in policies)


def test_default_calendar_is_madrid_office_hours_with_spanish_holidays() -> None:
    """Seed 003's 9-17 CET Monday to Friday, closed on Spain's public holidays."""
    office = DEFAULT_CALENDARS["office"]
    assert office.to_config() == {
        "timezone": "Europe/Madrid",
        "hours": ["mon-fri 09:00-17:00"],
        "holidays": "ES",
    }
    assert DEFAULT_CALENDARS["24x7"] is ALWAYS_OPEN


def test_seed_004_example_block_loads_and_splits_each_budget() -> None:
    """The commented priority matrix is valid config: 1bh to assign + the rest = 4/12/24bh."""
    data = tomllib.loads(seed_004_example())
    matrix = by_name(
        policies_from_config([*data["sla"]["policies"], table("support")], DEFAULT_CALENDARS)
    )
    for name, total in (("priority-high", 4), ("priority-medium", 12), ("priority-low", 24)):
        policy = matrix[name]
        assert policy.assign_within == Duration(1, "bh")
        assert policy.respond_within == Duration(total - 1, "bh")
        assert policy.followup_response_within == Duration(total, "bh")
    chosen = select(tuple(matrix.values()), facts(priority="high"))
    assert chosen.policy.name == "priority-high"


# -- Selection ---------------------------------------------------------------------------


def test_team_selects_setup_and_says_why() -> None:
    """A setup-team ticket gets the setup policy, with the matching selector in the reason."""
    chosen = select(default_policies(), facts(team="setup"))
    assert chosen.policy.name == "setup"
    assert chosen.reason == "policy 'setup' (first match: team setup)"


def test_team_selector_also_matches_the_category() -> None:
    """Seed 002: customers pick a department, so a category named like the team counts."""
    chosen = select(default_policies(), facts(team="general", category="Setup"))
    assert chosen.reason == "policy 'setup' (first match: category Setup)"


def test_first_match_wins_in_list_order() -> None:
    """A top-tier customer's setup ticket keeps the technicians' 1 h: that policy comes first."""
    chosen = select(default_policies(), facts(team="setup", tier="technicians"))
    assert chosen.reason == "policy 'technicians' (first match: tier technicians)"


def test_fallback_is_used_only_when_nothing_matches() -> None:
    """A catch-all listed first does not shadow the specific policies after it."""
    policies = policies_from_config(
        [table("any"), table("voice", channel="voicemail"), table("late-any")], DEFAULT_CALENDARS
    )
    assert select(policies, facts(channel="voicemail")).policy.name == "voice"
    other = select(policies, facts(channel="email"))
    assert other.policy.name == "late-any"  # the last fallback
    assert other.reason.startswith("policy 'late-any' (default: no policy with selectors")


def test_every_selector_of_a_policy_must_match() -> None:
    """Selectors combine with AND; the reason lists each one that matched."""
    policies = policies_from_config(
        [
            table("vip-critical", tier="vip", severities=[1, 2], priority="high"),
            table("rest"),
        ],
        DEFAULT_CALENDARS,
    )
    hit = select(policies, facts(tier="VIP", severity=2, priority="high"))
    assert hit.reason == "policy 'vip-critical' (first match: priority high, tier VIP, severity 2)"
    assert select(policies, facts(tier="vip", severity=3, priority="high")).policy.name == "rest"
    assert select(policies, facts(tier="vip", severity=None, priority="high")).policy.name == "rest"


def test_no_match_and_no_fallback_raises() -> None:
    """Built in code without a catch-all, an unmatched ticket is an error naming its facts."""
    only = Policy(
        name="voice",
        channels=("voicemail",),
        assign_within=Duration(1, "h"),
        respond_within=Duration(1, "h"),
        followup_response_within=Duration(24, "h"),
    )
    with pytest.raises(PolicyError, match=r"sla.policies: no policy matches team 'general'"):
        select([only], facts())


# -- Reading configuration ---------------------------------------------------------------


def test_accepts_singular_and_plural_selectors_and_empty_optional_clocks() -> None:
    """team = "x" equals teams = ["x"]; "" means no follow-ups and no auto-close."""
    one, many, _ = policies_from_config(
        [
            table("a", team="Setup", customer_followup_every="", auto_close_after=""),
            table("b", teams=["setup", "billing"], severity=1),
            table("c"),
        ],
        DEFAULT_CALENDARS,
    )
    assert one.teams == ("setup",)
    assert many.teams == ("setup", "billing")
    assert many.severities == (1,)
    assert one.customer_followup_every is None
    assert one.auto_close_after is None
    assert one.calendar == "24x7"


def ok(name: str) -> dict[str, Any]:
    return table(name, team=name)


Case = tuple[list[Any], str, str]
ERRORS: dict[str, Case] = {
    "unknown key": (
        [ok("a"), ok("b"), table("c", respond_witin="1h")],
        "sla.policies[2]",
        "unknown key 'respond_witin' (did you mean 'respond_within'?)",
    ),
    "bad duration": (
        [ok("a"), ok("b"), {**table("c"), "respond_within": "1 hour"}],
        "sla.policies[2].respond_within",
        "30m, 1h, 2d",
    ),
    "duration not a string": (
        [{**table("a"), "assign_within": 1}, table("b")],
        "sla.policies[0].assign_within",
        "must be a string such as '1h' or '4bd'",
    ),
    "missing clock": (
        [{k: v for k, v in table("a").items() if k != "respond_within"}],
        "sla.policies[0].respond_within",
        "missing; every policy states its own clocks",
    ),
    "unknown calendar": (
        [ok("a"), table("b", calendar="ofice")],
        "sla.policies[1].calendar",
        "unknown calendar 'ofice' (did you mean 'office'?); known calendars: 24x7, office",
    ),
    "unknown priority": (
        [table("a", priority="urgent"), table("b")],
        "sla.policies[0].priority",
        "unknown priority 'urgent'; use low, medium, high",
    ),
    "bad severity": (
        [table("a", severities=[1, 7]), table("b")],
        "sla.policies[0].severities",
        "7 is not a severity; use whole numbers 1 (critical) to 5",
    ),
    "unknown channel": (
        [table("a", channel="sms"), table("b")],
        "sla.policies[0].channel",
        "use email, voicemail",
    ),
    "singular and plural": (
        [table("a", team="x", teams=["y"]), table("b")],
        "sla.policies[0].teams",
        "give 'team' or 'teams', not both",
    ),
    "empty selector list": (
        [table("a", teams=[]), table("b")],
        "sla.policies[0].teams",
        "is empty; leave 'teams' out to match any team",
    ),
    "cadence without max": (
        [table("a", customer_followup_every="4bd")],
        "sla.policies[0].max_customer_followups",
        "e.g. max_customer_followups = 5",
    ),
    "negative max": (
        [table("a", max_customer_followups=-1)],
        "sla.policies[0].max_customer_followups",
        "must be a whole number, 0 or more",
    ),
    "missing name": (
        [{**CLOCKS}],
        "sla.policies[0].name",
        "missing or empty",
    ),
    "duplicate name": (
        [ok("a"), table("a")],
        "sla.policies[1].name",
        "'a' is already the name of sla.policies[0]",
    ),
    "not a table": (
        ["support"],
        "sla.policies[0]",
        "must be a table",
    ),
    "no fallback": (
        [ok("a"), ok("b")],
        "sla.policies",
        "add a last policy without team/priority/severity/channel/tier",
    ),
    "empty list": (
        [],
        "sla.policies",
        "is empty; give at least one policy",
    ),
}


@pytest.mark.parametrize("case", ERRORS.values(), ids=list(ERRORS))
def test_config_mistakes_name_the_key_and_the_fix(case: Case) -> None:
    """Every mistake raises PolicyError (a ValueError) whose message starts with its key."""
    tables, key, fix = case
    with pytest.raises(PolicyError) as caught:
        policies_from_config(tables, DEFAULT_CALENDARS)
    assert isinstance(caught.value, ValueError)
    assert caught.value.key == key
    assert str(caught.value).startswith(f"{key}: ")
    assert fix in str(caught.value)


def test_policy_built_in_code_is_checked_too() -> None:
    """A Policy constructed directly rejects values config would reject."""
    with pytest.raises(PolicyError, match="priorities: 'urgent' is not one of"):
        Policy(
            name="x",
            priorities=("urgent",),
            assign_within=Duration(1, "h"),
            respond_within=Duration(1, "h"),
            followup_response_within=Duration(24, "h"),
        )


def test_shipped_file_has_only_known_tables() -> None:
    """The shipped file holds calendars and policies only, so the daemon can layer it."""
    text = resources.files("triage").joinpath(SHIPPED_PATH).read_text(encoding="utf-8")
    data: Mapping[str, Any] = tomllib.loads(text)
    assert set(data) == {"calendars", "sla"}
    assert set(data["sla"]) == {"policies"}
