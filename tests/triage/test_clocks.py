"""SLA clocks: each seed rule on concrete Madrid dates, alarms, and replay as a pure fold."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import reduce
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from triage import clock_state
from triage.alarms import alarms, next_due
from triage.clocks import (
    AgentResponse,
    Assigned,
    Clocks,
    Closed,
    CustomerMessage,
    Event,
    FollowupSent,
    Opened,
    Reopened,
    Waiting,
    apply,
    replay,
)
from triage.durations import Duration
from triage.policy import DEFAULT_CALENDARS, Policy, default_policies, policies_from_config

MADRID = ZoneInfo("Europe/Madrid")
OFFICE = DEFAULT_CALENDARS["office"]
DEFAULTS = {p.name: p for p in default_policies()}
SUPPORT, SETUP = DEFAULTS["support"], DEFAULTS["setup"]


def md(month: int, day: int, hour: int, minute: int = 0, year: int = 2026) -> datetime:
    """A Madrid wall-clock time (CET/CEST as the date says)."""
    return datetime(year, month, day, hour, minute, tzinfo=MADRID)


def policy(**keys: Any) -> Policy:
    """An office-hours policy read as config; seed-004 Medium unless overridden."""
    table = {
        "name": "test",
        "calendar": "office",
        "assign_within": "1bh",
        "respond_within": "11bh",
        "followup_response_within": "12bh",
        **keys,
    }
    (only,) = policies_from_config([table], DEFAULT_CALENDARS)
    return only


def run(p: Policy, *events: Event) -> Clocks:
    return replay(p, OFFICE, events)


# -- Seed 000, 003, 004: when the clocks start ------------------------------------------


def test_after_hours_mail_counts_from_the_next_business_day() -> None:
    """Thu 24 Dec 16:30 + 1bh: 30 min that day, then Christmas and the weekend, Mon 09:30."""
    clocks = run(policy(assign_within="1bh", respond_within="1bh"), Opened(md(12, 24, 16, 30)))
    assert clocks.assign_by == md(12, 28, 9, 30)
    assert clocks.respond_by == md(12, 28, 10, 30)
    assert clocks.respond_provisional
    assert clocks.respond_from == clocks.assign_by


def test_saturday_mail_under_seed_004_medium_is_due_monday_0900_plus_12bh() -> None:
    """Sat 7 Mar: 1bh to assign + 11bh to respond = Monday 09:00 + 12bh = Tuesday 13:00."""
    clocks = run(policy(), Opened(md(3, 7, 11), channel="email"))
    assert clocks.assign_by == md(3, 9, 10)
    assert clocks.respond_by == md(3, 10, 13)
    assert clocks.respond_by == Duration.parse("12bh").add(md(3, 9, 9), OFFICE)


def test_seed_000_support_assigns_and_answers_within_business_hours() -> None:
    """A Saturday voicemail: the desk opens Monday at 9, so assign by 10 and (provisionally,
    until assigned) respond by 11, not Saturday night."""
    clocks = run(SUPPORT, Opened(md(3, 7, 11), channel="voicemail"))
    assert clocks.assign_by == md(3, 9, 10)
    assert clocks.respond_by == md(3, 9, 11)
    assert clocks.respond_provisional


def test_assignment_makes_respond_by_definitive_and_explains_it() -> None:
    """Respond 1bh after assignment, not after arrival; the step says how it was computed."""
    p = policy(assign_within="1bh", respond_within="1bh")
    clocks = run(p, Opened(md(12, 24, 10)), Assigned(md(12, 24, 10, 5), agent="ana"))
    assert clocks.assign_by is None  # met: pending deadlines are the non-None ones
    assert clocks.respond_by == md(12, 24, 11, 5)
    assert clocks.respond_from == md(12, 24, 10, 5)
    assert not clocks.respond_provisional
    hows = {s.field: s.how for s in clocks.steps if s.event == "assigned"}
    assert hows["respond_by"] == (
        "respond_by = assigned to ana 2026-12-24T10:05+01:00 + 1bh (calendar office) "
        "= 2026-12-24T11:05+01:00"
    )
    assert hows["assign_by"].startswith("assign_by met: assigned to ana at 2026-12-24T10:05+01:00")
    assert hows["assign_by"].endswith("55 min early")


def test_reassignment_never_extends_the_first_response() -> None:
    """A second agent inherits the first agent's deadline."""
    clocks = run(
        SUPPORT,
        Opened(md(3, 2, 10)),
        Assigned(md(3, 2, 10, 10), agent="ana"),
        Assigned(md(3, 2, 10, 50), agent="luis"),
    )
    assert clocks.respond_by == md(3, 2, 11, 10)
    assert clocks.steps[-1].how.startswith("assigned to luis: respond_by stays")


def test_late_assignment_cannot_push_back_a_follow_up_already_due() -> None:
    """A customer follow-up due at 10:30 next day stays, though assignment came later."""
    clocks = run(
        SUPPORT,
        Opened(md(3, 2, 10)),
        CustomerMessage(md(3, 2, 10, 30)),
        Assigned(md(3, 3, 10), agent="ana"),
    )
    assert clocks.respond_by == md(3, 3, 10, 30)
    assert not clocks.respond_provisional


def test_follow_up_before_assignment_wins_when_earlier_than_the_provisional() -> None:
    """Setup team (24 h + 24 h): a follow-up 1 h in is due in 25 h, before the provisional 48 h."""
    clocks = run(SETUP, Opened(md(3, 2, 10)), CustomerMessage(md(3, 2, 11)))
    assert clocks.respond_by == md(3, 3, 11)
    assert not clocks.respond_provisional


# -- Seed 000 follow-ups, seed 001 chases ----------------------------------------------


def answered() -> list[Event]:
    return [
        Opened(md(3, 2, 10)),
        Assigned(md(3, 2, 10, 10), "ana"),
        AgentResponse(md(3, 2, 10, 30)),
    ]


def test_customer_follow_up_is_answered_within_24_hours() -> None:
    """Seed 000: 'Respondemos a los correos de seguimiento en 24 horas'."""
    clocks = run(SUPPORT, *answered(), CustomerMessage(md(3, 2, 11)))
    assert clocks.respond_by == md(3, 3, 11)
    assert clocks.respond_from == md(3, 2, 11)


def test_chase_does_not_reset_and_later_messages_keep_the_earliest_due() -> None:
    """Seed 001: a '¿alguna novedad?' within 40 min is attached, the due does not move."""
    base = run(SUPPORT, *answered(), CustomerMessage(md(3, 2, 11)))
    chased = apply(base, CustomerMessage(md(3, 2, 11, 20), chase=True), SUPPORT, OFFICE)
    assert chased.respond_by == md(3, 3, 11)
    assert chased.steps[-1].how == "chase within 40 min (seed 001): SLAs are not reset"
    again = apply(chased, CustomerMessage(md(3, 2, 15)), SUPPORT, OFFICE)
    assert again.respond_by == md(3, 3, 11)
    assert again.steps[-1].how.startswith("respond_by stays 2026-03-03T11:00+01:00")


def test_agent_response_meets_every_pending_clock() -> None:
    """An agent's answer stops the response clock, and the assignment clock if still running."""
    clocks = run(SUPPORT, Opened(md(3, 2, 10)), AgentResponse(md(3, 2, 10, 20)))
    assert (clocks.assign_by, clocks.respond_by) == (None, None)
    assert clocks.state == "open"


def test_setup_team_follows_up_every_4bd_and_closes_after_24bd() -> None:
    """From Mon 2 Mar 10:00: follow-up Fri 6 Mar; 24bd skips Good Friday: Mon 6 Apr 10:00."""
    clocks = run(SETUP, *answered(), Waiting(md(3, 2, 10, 30)))
    assert clocks.state == "waiting"
    assert clocks.followup_due == md(3, 6, 10, 30)
    assert clocks.close_due == md(4, 6, 10, 30)
    assert clocks.close_due.utcoffset() == timedelta(hours=2)  # summer time by then


def test_follow_up_cadence_skips_a_public_holiday() -> None:
    """Wed 7 Oct + 4bd: Thu, Fri, (Mon 12 Oct is Fiesta Nacional), Tue, Wed 14 Oct."""
    clocks = run(SETUP, Opened(md(10, 7, 9)), Waiting(md(10, 7, 10)))
    assert clocks.followup_due == md(10, 14, 10)
    sent = apply(clocks, FollowupSent(md(10, 14, 10)), SETUP, OFFICE)
    assert sent.followups_sent == 1
    assert sent.followup_due == md(10, 20, 10)
    assert sent.close_due == clocks.close_due  # follow-ups are ours; silence keeps counting


def test_customer_reply_while_waiting_reopens_and_resets_the_cadence() -> None:
    """Any reply ends the silence: open again, follow-ups and auto-close cleared, 24 h to answer."""
    waiting = run(
        SETUP,
        Opened(md(3, 2, 9)),
        Waiting(md(3, 2, 10)),
        FollowupSent(md(3, 6, 10)),
        FollowupSent(md(3, 12, 10)),
    )
    assert waiting.followups_sent == 2
    replied = apply(waiting, CustomerMessage(md(3, 13, 8), chase=True), SETUP, OFFICE)
    assert replied.state == "open"
    assert (replied.followup_due, replied.close_due, replied.followups_sent) == (None, None, 0)
    assert replied.respond_by == md(3, 14, 8)
    rewaited = apply(replied, Waiting(md(3, 13, 9)), SETUP, OFFICE)
    assert rewaited.followup_due == md(3, 19, 9)


def test_follow_ups_stop_at_the_maximum() -> None:
    """After max_customer_followups, no further follow-up is due; the close still is."""
    p = policy(customer_followup_every="1bd", max_customer_followups=2, auto_close_after="5bd")
    clocks = run(
        p,
        Opened(md(3, 2, 9)),
        Waiting(md(3, 2, 10)),
        FollowupSent(md(3, 3, 10)),
        FollowupSent(md(3, 4, 10)),
    )
    assert clocks.followups_sent == 2
    assert clocks.followup_due is None
    assert clocks.close_due == md(3, 9, 10)
    last = {s.field: s.how for s in clocks.steps[-2:]}
    assert last == {
        "followup_due": "followup_due: none, 2 of max 2 sent",
        "followups_sent": "followups_sent = 2 of max 2",
    }


def test_support_auto_close_is_72_wall_clock_hours_across_the_dst_change() -> None:
    """Fri 23 Oct 12:00 CEST + 72 h = Mon 26 Oct 11:00 CET (Madrid falls back on the 25th)."""
    clocks = run(SUPPORT, Opened(md(10, 23, 9)), Waiting(md(10, 23, 12)))
    assert clocks.close_due == md(10, 26, 11)
    assert clocks.close_due - md(10, 23, 12) == timedelta(hours=72)
    assert clocks.followup_due == md(10, 29, 12)  # after the close: support closes first


def test_closed_clears_everything_and_reopened_owes_a_reply() -> None:
    """A closed ticket ignores customer mail until the daemon reopens it."""
    closed = run(SUPPORT, Opened(md(3, 2, 10)), Waiting(md(3, 2, 11)), Closed(md(3, 5, 11), "auto"))
    assert closed.state == "closed"
    pending = (closed.assign_by, closed.respond_by, closed.followup_due, closed.close_due)
    assert pending == (None, None, None, None)
    ignored = apply(closed, CustomerMessage(md(3, 6, 9)), SUPPORT, OFFICE)
    assert ignored.state == "closed"
    assert ignored.steps[-1].field == ""
    reopened = apply(ignored, Reopened(md(3, 6, 9)), SUPPORT, OFFICE)
    assert reopened.state == "open"
    assert reopened.respond_by == md(3, 7, 9)


def test_policy_and_calendar_must_agree() -> None:
    """Passing a calendar other than the policy's is a wiring bug, caught at once."""
    with pytest.raises(ValueError, match="counts in calendar 'office', not '24x7'"):
        replay(SUPPORT, DEFAULT_CALENDARS["24x7"], [Opened(md(3, 2, 10))])


def test_events_need_aware_times() -> None:
    """A naive event time is refused with the fix."""
    with pytest.raises(ValueError, match=r"Opened\.at must be timezone-aware"):
        Opened(datetime(2026, 3, 2, 10))


# -- Alarms for the scheduler -------------------------------------------------------------


def test_wall_clock_alarms_at_80_percent_and_at_the_deadline() -> None:
    """1 h assign from 10:00: at risk 10:48, breached 11:00; provisional respond likewise."""
    clocks = run(SUPPORT, Opened(md(3, 2, 10)))
    found = [(a.clock, a.kind, a.at) for a in alarms(clocks, OFFICE, 0.8)]
    assert found == [
        ("assign", "at_risk", md(3, 2, 10, 48)),
        ("assign", "breached", md(3, 2, 11)),
        ("respond", "at_risk", md(3, 2, 11, 48)),
        ("respond", "breached", md(3, 2, 12)),
    ]
    assert alarms(clocks, OFFICE, 0.8)[0].key == "assign:at_risk:2026-03-02T10:00:00+00:00"


def test_alarms_already_sent_are_left_out() -> None:
    """The scheduler passes the ticket's sent keys: those alarms are not worked out again."""
    clocks = run(policy(assign_within="1bh"), Opened(md(12, 24, 16, 30)))
    every = alarms(clocks, OFFICE, 0.8)
    sent = {every[0].key, every[3].key}
    assert alarms(clocks, OFFICE, 0.8, sent=sent) == [a for a in every if a.key not in sent]
    assert alarms(clocks, OFFICE, 0.8, sent={a.key for a in every}) == []


def test_business_alarm_counts_open_minutes_only() -> None:
    """Thu 24 Dec 16:30 + 1bh: 48 of 60 open minutes are gone at Monday 09:18."""
    clocks = run(policy(assign_within="1bh"), Opened(md(12, 24, 16, 30)))
    risk = next(a for a in alarms(clocks, OFFICE, 0.8) if a.clock == "assign")
    assert (risk.kind, risk.at, risk.deadline) == ("at_risk", md(12, 28, 9, 18), md(12, 28, 9, 30))


def test_alarm_keys_survive_replay_and_change_with_a_re_stamp() -> None:
    """Same events, same keys (sent once after a restart); assignment moves respond's keys."""
    events = [Opened(md(3, 2, 10))]
    first = {a.key for a in alarms(run(SUPPORT, *events), OFFICE, 0.8)}
    assert first == {a.key for a in alarms(run(SUPPORT, *events), OFFICE, 0.8)}
    assigned = run(SUPPORT, *events, Assigned(md(3, 2, 10, 5), "ana"))
    keys = {a.key for a in alarms(assigned, OFFICE, 0.8)}
    assert keys.isdisjoint(first)
    assert keys == {
        "respond:at_risk:2026-03-02T10:05:00+00:00",
        "respond:breached:2026-03-02T10:05:00+00:00",
    }


def test_next_due_is_the_earliest_unsent_alarm_or_cadence() -> None:
    """Sent alarms drop out; a waiting ticket is due at its follow-up or close; closed never."""
    clocks = run(SUPPORT, Opened(md(3, 2, 10)))
    assert next_due(clocks, set(), OFFICE, 0.8) == md(3, 2, 10, 48)
    sent = {"assign:at_risk:2026-03-02T10:00:00+00:00"}
    assert next_due(clocks, sent, OFFICE, 0.8) == md(3, 2, 11)
    waiting = apply(clocks, Waiting(md(3, 2, 10, 30)), SUPPORT, OFFICE)
    assert next_due(waiting, set(), OFFICE, 0.8) == md(3, 5, 10, 30)  # the 72 h close
    closed = apply(waiting, Closed(md(3, 2, 11), "solved"), SUPPORT, OFFICE)
    assert next_due(closed, set(), OFFICE, 0.8) is None


def test_at_risk_must_be_a_fraction() -> None:
    """0.8 means 80 %; 80 is a mistake worth saying."""
    with pytest.raises(ValueError, match="at_risk must be a fraction"):
        alarms(Clocks(), OFFICE, 80)


# -- Replay is a pure fold ----------------------------------------------------------------

START = datetime(2026, 3, 27, 15, tzinfo=UTC)  # the week of the spring DST change
MAKERS: dict[str, Callable[[datetime], Event]] = {
    "opened": lambda at: Opened(at, channel="voicemail"),
    "assigned": lambda at: Assigned(at, agent="ana"),
    "message": CustomerMessage,
    "chase": lambda at: CustomerMessage(at, chase=True),
    "answer": AgentResponse,
    "waiting": Waiting,
    "followup": FollowupSent,
    "closed": lambda at: Closed(at, reason="solved"),
    "reopened": Reopened,
}
KINDS = st.sampled_from(sorted(MAKERS))


@st.composite
def histories(draw: st.DrawFn) -> list[Event]:
    gaps = draw(st.lists(st.integers(0, 6 * 24 * 60), min_size=1, max_size=8))
    kinds = draw(st.lists(KINDS, min_size=len(gaps), max_size=len(gaps)))
    out: list[Event] = [Opened(START)]
    at = START
    for gap, kind in zip(gaps, kinds, strict=True):
        at += timedelta(minutes=gap)
        out.append(MAKERS[kind](at))
    return out


POLICIES = [
    SUPPORT,
    SETUP,
    policy(),
    policy(customer_followup_every="1bd", max_customer_followups=1),
]
OBSERVED = ("state", "assign_by", "respond_by", "followup_due", "followups_sent", "close_due")


@settings(max_examples=60, deadline=None)
@given(events=histories(), which=st.integers(0, len(POLICIES) - 1), cut=st.integers(0, 9))
def test_replay_is_the_fold_of_apply_and_resumes_from_any_prefix(
    events: list[Event], which: int, cut: int
) -> None:
    """replay == apply one by one; replay(prefix) then the rest == replay(all)."""
    p = POLICIES[which]
    full = replay(p, OFFICE, events)
    folded = reduce(lambda c, e: apply(c, e, p, OFFICE), events, Clocks())
    assert full == folded
    head, rest = events[:cut], events[cut:]
    assert reduce(lambda c, e: apply(c, e, p, OFFICE), rest, replay(p, OFFICE, head)) == full


@settings(max_examples=60, deadline=None)
@given(events=histories(), which=st.integers(0, len(POLICIES) - 1))
def test_every_change_has_a_step_and_states_hold_their_clocks(
    events: list[Event], which: int
) -> None:
    """Each changed field gets a step; closed has no deadline; waiting has no response clock."""
    p = POLICIES[which]
    clocks = Clocks()
    for event in events:
        after = apply(clocks, event, p, OFFICE)
        new_steps = after.steps[len(clocks.steps) :]
        assert new_steps
        changed = {f for f in OBSERVED if getattr(clocks, f) != getattr(after, f)}
        assert changed <= {s.field for s in new_steps}
        clocks = after
    if clocks.state == "closed":
        assert not alarms(clocks, OFFICE, 0.8)
        assert next_due(clocks, (), OFFICE, 0.8) is None
    if clocks.state == "waiting":
        assert (clocks.assign_by, clocks.respond_by) == (None, None)
    for t in (clocks.assign_by, clocks.respond_by, clocks.followup_due, clocks.close_due):
        assert t is None or t.utcoffset() is not None


@settings(max_examples=60, deadline=None)
@given(events=histories(), which=st.integers(0, len(POLICIES) - 1))
def test_the_snapshot_holds_every_deadline_a_replay_gives(events: list[Event], which: int) -> None:
    """decode(encode(replay)) is the replay without its words, and folding on from it gives
    what folding on from the full replay gives: the scheduler's shortcut is exact."""
    p = POLICIES[which]
    *head, last = events or [Opened(datetime(2026, 3, 2, 9, tzinfo=UTC))]
    full = replay(p, OFFICE, head)
    snap = clock_state.decode(json.loads(json.dumps(clock_state.encode(full))))
    assert clock_state.encode(snap) == clock_state.encode(full)
    for name in ("assign", "first_response", "reply"):
        mine, theirs = getattr(snap, name), getattr(full, name)
        assert (mine is None) == (theirs is None)
        if mine is not None:
            assert (mine.start, mine.due, mine.business, mine.provisional) == (
                theirs.start,
                theirs.due,
                theirs.business,
                theirs.provisional,
            )
    on_snap = apply(snap, last, p, OFFICE, explain=False)
    on_full = apply(full, last, p, OFFICE)
    assert clock_state.encode(on_snap) == clock_state.encode(on_full)
    assert alarms(on_snap, OFFICE, 0.8) == alarms(on_full, OFFICE, 0.8)


def test_a_snapshot_this_version_did_not_write_is_refused() -> None:
    with pytest.raises(clock_state.SnapshotError, match="version-1"):
        clock_state.decode({"v": 99})
    with pytest.raises(clock_state.SnapshotError, match="malformed"):
        clock_state.decode({"v": 1, "state": "open"})
    good = clock_state.encode(
        replay(POLICIES[0], OFFICE, [Opened(datetime(2026, 3, 2, 9, tzinfo=UTC))])
    )
    with pytest.raises(clock_state.SnapshotError, match="no UTC offset"):
        clock_state.decode(good | {"followup_due": "2026-03-02T09:00:00"})


@settings(max_examples=80, deadline=None)
@given(
    events=histories(),
    which=st.integers(0, len(POLICIES) - 1),
    hours=st.integers(-2, 24 * 14),
)
def test_a_passed_deadlines_at_risk_alarm_comes_at_the_deadline(
    events: list[Event], which: int, hours: int
) -> None:
    """With ``now``, the alarms are the same ones; an at-risk alarm whose deadline has
    passed by then comes at its deadline (its moment is not worked out), any other exactly
    as without ``now``."""
    clocks = replay(POLICIES[which], OFFICE, events)
    now = START + timedelta(hours=hours)
    exact = alarms(clocks, OFFICE, 0.8)
    quick = alarms(clocks, OFFICE, 0.8, now=now)
    assert sorted(a.key for a in quick) == sorted(a.key for a in exact)
    by_key = {a.key: a for a in quick}
    for a in exact:
        passed = a.kind == "at_risk" and a.deadline <= now
        assert by_key[a.key] == (a._replace(at=a.deadline) if passed else a)
