"""`buzon sla due` and the desk config sections: answers, and errors that name the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon import config as config_mod
from daemon.errors import ConfigError
from support.daemon import run_cli


def run(cwd: Path, *argv: str) -> tuple[int, str, str]:
    # A process of its own: the CLI configures logging for the whole process.
    result = run_cli(*argv, check=False, cwd=cwd, env={"BUZON_CONFIG": ""})
    return result.returncode, result.stdout.strip(), result.stderr.strip()


def test_seed_example_on_the_shipped_office_calendar(tmp_path: Path) -> None:
    """Issue 6: Thursday 24 Dec 2026 16:30 Madrid + 1bh = Monday 28 Dec 09:30 (25th off)."""
    code, out, _ = run(
        tmp_path, "sla", "due", "--start", "2026-12-24T16:30+01:00", "--add", "1bh",
        "--calendar", "office",
    )  # fmt: skip
    assert (code, out) == (0, "2026-12-28T09:30:00+01:00")


def test_a_configured_calendar_is_used_and_reported_in_json(tmp_path: Path) -> None:
    cfg = tmp_path / "buzon.toml"
    cfg.write_text(
        "[storage]\n"
        f'database = "sqlite:///{tmp_path}/b.db"\nspool = "{tmp_path}/spool"\n'
        f'attachments = "{tmp_path}/att"\n'
        "[calendars.sofia]\n"
        'timezone = "Europe/Sofia"\nhours = ["mon-fri 09:00-18:00"]\nholidays = "BG"\n'
    )
    code, out, _ = run(
        tmp_path, "--config", str(cfg), "sla", "due", "--start", "2026-03-02T17:30+02:00",
        "--add", "90bm", "--calendar", "sofia", "--json",
    )  # fmt: skip
    # 3 March is Liberation Day in Bulgaria: 30 minutes on the 2nd, the other 60 on the 4th.
    assert code == 0
    assert json.loads(out)["due"] == "2026-03-04T10:00:00+02:00"


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (("--start", "2026-12-24T16:30", "--add", "1h"), "no offset"),
        (("--start", "yesterday", "--add", "1h"), "ISO 8601"),
        (("--start", "2026-12-24T16:30Z", "--add", "1bx"), "90bm, 1bh, 4bd"),
        (("--start", "2026-12-24T16:30Z", "--add", "1h", "--calendar", "x"), "[calendars.NAME]"),
    ],
)
def test_bad_arguments_exit_2_and_say_the_fix(
    tmp_path: Path, argv: tuple[str, ...], says: str
) -> None:
    code, _, err = run(tmp_path, "sla", "due", *argv)
    assert code == 2 and says in err


@pytest.mark.parametrize(
    ("toml", "says"),
    [
        ('[calendars.x]\ntimezone = "Mars/Olympus"\nhours = ["mon 09:00-17:00"]\n', "timezone"),
        ("[sla]\nat_risk = 1.5\n", "[sla] at_risk"),
        ('[sla]\nreopen_within = "soon"\n', "[sla] reopen_within"),
        ("[sla]\nat_rsk = 0.5\n", "did you mean 'at_risk'"),
        ('[[sla.policies]]\nname = "p"\ncalendar = "nope"\n', "nope"),
        ('[outbound]\nrelay = "localhost"\n', "host:port"),
        ('[outbound]\ntls = "ssl"\n', "starttls"),
        ('[outbound]\nfrom = "soporte"\n', "[outbound] from"),
        ('[agents]\nana = "ana"\n', "[agents]"),
    ],
)
def test_desk_sections_errors_name_the_key(tmp_path: Path, toml: str, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config_mod.parse(toml, base=tmp_path, source="t.toml")
    assert says in str(caught.value)


def test_defaults_reproduce_seed_000(tmp_path: Path) -> None:
    cfg = config_mod.parse("", base=tmp_path, source="t.toml")
    names = [p.name for p in cfg.desk.sla.policies]
    assert {"support", "setup", "technicians"} <= set(names)
    assert cfg.desk.outbound.from_address.startswith("buzon@")
    assert cfg.desk.sla.tier_of("Ana@BigCorp.es") == ""
