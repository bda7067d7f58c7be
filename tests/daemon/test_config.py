"""Configuration errors name the key and the fix; the CLI exits 2 on them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daemon import config as config_mod
from daemon.config_desk import OutboundConfig, SlaConfig
from daemon.errors import ConfigError
from support.daemon import run_cli


def parse(text: str, base: Path) -> config_mod.Config:
    return config_mod.parse(text, base=base, source="test.toml")


def test_embedded_default_runs_under_buzon_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no config at all: SQLite and spool under ./buzon-data, SMTP on 127.0.0.1:2525."""
    monkeypatch.chdir(tmp_path)
    cfg = config_mod.load(None, environ={})
    assert cfg.storage.database == f"sqlite:///{tmp_path}/buzon-data/buzon.db"
    assert cfg.storage.spool == f"{tmp_path}/buzon-data/spool"
    assert cfg.smtp.listen == "127.0.0.1:2525" and cfg.smtp.domains == ("example.com",)
    assert cfg.smtp.max_message_size == 35 * 1024 * 1024


def test_buzon_config_env_is_used(tmp_path: Path) -> None:
    """BUZON_CONFIG names the file when --config is absent."""
    path = tmp_path / "b.toml"
    path.write_text('[smtp]\nlisten = "127.0.0.1:2600"\n')
    cfg = config_mod.load(None, environ={"BUZON_CONFIG": str(path)})
    assert cfg.smtp.port == 2600 and cfg.source == str(path)


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    """A relative spool path means relative to the config file, not to the working directory."""
    cfg = parse('[storage]\nspool = "q"\ndatabase = "sqlite:///d/b.db"\n', tmp_path)
    assert cfg.storage.spool == str(tmp_path / "q")
    assert cfg.storage.database == f"sqlite:///{tmp_path}/d/b.db"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[smtp]\nlisten_on = "x"\n', "[smtp] listen_on: unknown key; did you mean 'listen'?"),
        ("[smpt]\n", "[smpt]: unknown section; did you mean 'smtp'?"),
        ('[smtp]\nmax_message_size = "big"\n', "[smtp] max_message_size: expected an integer"),
        ('[smtp]\ndomains = "example.com"\n', "[smtp] domains: expected a list of strings"),
        ('[smtp]\nlisten = "2525"\n', '[smtp] listen = "2525": expected "host:port"'),
        ("[smtp]\ndomains = []\n", "would refuse every recipient"),
        ('[storage]\ndatabase = "mysql://x"\n', "use a sqlite:///path or postgresql"),
        ('[log]\nlevel = "loud"\n', '[log] level: use one of "debug"'),
        ('[log]\ncomponents = { imap = "loud" }\n', "[log] components: expected component"),
        ('[metrics]\nlisten = "9325"\n', '[metrics] listen = "9325": expected "host:port"'),
        ("[pipeline]\nstuck_after = 10.0\n", "stuck_after: must be longer than parse_timeout"),
        ("[smtp\n", "not valid TOML"),
    ],
)
def test_invalid_config_names_key_and_fix(tmp_path: Path, text: str, expected: str) -> None:
    """Each kind of mistake produces a message naming the key and what to write instead."""
    with pytest.raises(ConfigError) as err:
        parse(text, tmp_path)
    assert expected in str(err.value)


def test_unwritable_spool_path_is_refused(tmp_path: Path) -> None:
    """A spool under a regular file cannot be created: refused at start, not at first mail."""
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match=r"\[storage\] spool: .* is not a directory"):
        parse('[storage]\nspool = "file/spool"\n', tmp_path)


def test_cli_exits_2_with_the_message(tmp_path: Path) -> None:
    """`buzon check-config` on a bad file exits 2 and prints the error on stderr."""
    path = tmp_path / "bad.toml"
    path.write_text("[smtp]\nport = 25\n")
    result = run_cli("--config", str(path), "check-config", check=False)
    assert result.returncode == 2
    assert "[smtp] port: unknown key" in result.stderr


def test_cli_missing_file_exits_2(tmp_path: Path) -> None:
    """A --config path that does not exist is a usage error with a hint."""
    result = run_cli("--config", str(tmp_path / "nope.toml"), "check-config", check=False)
    assert result.returncode == 2 and "does not exist" in result.stderr


def test_check_config_prints_effective_config_with_secrets_masked(tmp_path: Path) -> None:
    """check-config shows every effective value, but never a database password."""
    path = tmp_path / "c.toml"
    path.write_text('[storage]\ndatabase = "postgresql://buzon:s3cret@db.local/buzon"\n')
    result = run_cli("--config", str(path), "check-config")
    assert "s3cret" not in result.stdout
    body = json.loads(result.stdout.split("\n", 1)[1])
    assert body["storage"]["database"] == "postgresql://buzon:********@db.local/buzon"
    assert body["smtp"]["max_message_size"] == 35 * 1024 * 1024


def test_sample_config_is_valid_and_documents_every_key(tmp_path: Path) -> None:
    """buzon.example.toml parses, and names every key the code knows."""
    sample = Path(__file__).resolve().parents[2] / "buzon.example.toml"
    text = sample.read_text()
    parse(text.replace('"/var/lib/buzon', f'"{tmp_path}'), tmp_path)
    extra = [("[imap]", config_mod.ImapAccount), ("[voicemail_dir]", config_mod.VoicemailDir)]
    for section, cls in [*config_mod.SECTIONS.items(), *extra]:
        assert f"[{section}]" in text
        for name in cls.__dataclass_fields__:
            if (section, name) == ("triage", "rules"):
                assert "[routing]" in text  # the other half of triage's settings
            if (section, name) == ("transcription", "models"):
                assert "[transcription.models]" in text  # a table of its own
                continue
            assert f"{name} =" in text, f"[{section}] {name} is not documented in the sample"
    for section in ("[calendars.", "[sla]", "[[sla.policies]]", "[agents]", "[outbound]"):
        assert section in text, f"{section} is not documented in the sample"
    for name in [*SlaConfig.__dataclass_fields__, *OutboundConfig.__dataclass_fields__]:
        key = {"from_address": "from", "calendars": "[calendars.", "policies": "[[sla.policies]]"}
        shown = key.get(name, f"{name} =")
        assert shown in text or f"[sla.{name}]" in text, f"{name} is not documented"


IMAP_OK = """
[[imap]]
name = "support"
host = "127.0.0.1"
port = 1143
security = "none"
username = "support"
password_env = "IMAP_PW"
"""


def test_imap_accounts_are_read(tmp_path: Path) -> None:
    """[[imap]] tables become typed accounts with their defaults filled in."""
    cfg = parse(IMAP_OK + IMAP_OK.replace('"support"\nhost', '"other"\nhost'), tmp_path)
    assert [a.name for a in cfg.imap] == ["support", "other"]
    assert cfg.imap[0].folders == ("INBOX",) and cfg.imap[0].after == "keep"
    assert cfg.imap[0].secret({"IMAP_PW": "pw"}) == "pw"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (('"127.0.0.1"', '"imap.example.com"'), "only allowed for a loopback host"),
        (('password_env = "IMAP_PW"', 'password = "x"'), "[[imap]] password: unknown key"),
        (('password_env = "IMAP_PW"', ""), "set exactly one of password_file or password_env"),
        (('security = "none"', 'security = "ssl"'), 'security: use "tls"'),
        (("port = 1143", 'port = 1143\nafter = "delete"'), 'after: use "keep"'),
        (('password_env = "IMAP_PW"', 'password_file = "missing.pw"'), "does not exist"),
        (("port = 1143", "port = 1143\nlease = 1.0"), "lease = 1.0: use at least 3 seconds"),
    ],
)
def test_invalid_imap_account_names_key_and_fix(
    tmp_path: Path, change: tuple[str, str], expected: str
) -> None:
    """IMAP mistakes are refused at start with the account and the fix named."""
    with pytest.raises(ConfigError) as err:
        parse(IMAP_OK.replace(*change), tmp_path)
    assert expected in str(err.value)


def test_duplicate_imap_names_are_refused(tmp_path: Path) -> None:
    """Two accounts with one name would share a checkpoint: refused."""
    with pytest.raises(ConfigError, match="used twice"):
        parse(IMAP_OK + IMAP_OK, tmp_path)


def test_transcription_and_voicemail_dirs_are_read(tmp_path: Path) -> None:
    """[transcription] with its per-mailbox models and [[voicemail_dir]] tables become typed
    values; relative paths resolve against the config file; the pool size defaults to
    one per core but one."""
    text = """
[transcription]
model = "models/es"
[transcription.models]
"6001" = "models/bg"
"Sales@Example.com" = "/srv/en"
[[voicemail_dir]]
path = "vm/INBOX"
processed = "vm/done"
mailbox = "6001"
"""
    cfg = parse(text, tmp_path)
    t = cfg.transcription
    assert t.model == str(tmp_path / "models/es")
    assert t.model_for(("6001", "x@example.com")) == str(tmp_path / "models/bg")
    assert t.model_for(("", "sales@example.com")) == "/srv/en"
    assert t.model_for(("7000",)) == t.model
    assert t.pool_size(cores=2) == 1 and t.pool_size(cores=8) == 7
    (d,) = cfg.voicemail_dir
    assert (d.path, d.processed, d.mailbox) == (
        str(tmp_path / "vm/INBOX"),
        str(tmp_path / "vm/done"),
        "6001",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[transcription]\nworkers = -1\n", "[transcription] workers"),
        ("[transcription]\nmemory_limit = 1000\n", "use at least 268435456"),
        ("[transcription]\nconfidence_threshold = 2\n", "a number from 0 to 1"),
        ('[transcription.models]\n"6001" = 3\n', "[transcription.models]: expected a table"),
        ('[[voicemail_dir]]\npath = "a"\n', "path and processed are both required"),
        ('[[voicemail_dir]]\npath = "a"\nprocessed = "a"\n', "another directory"),
        ('[voicemail_dir]\npath = "a"\n', "must be written [[voicemail_dir]]"),
    ],
)
def test_bad_transcription_settings_name_the_key_and_fix(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError) as err:
        parse(text, tmp_path)
    assert message in str(err.value)


def test_log_components_and_metrics_are_read(tmp_path: Path) -> None:
    cfg = parse(
        '[log]\ncomponents = { imap = "DEBUG" }\n[metrics]\nlisten = "127.0.0.1:9325"\n',
        tmp_path,
    )
    assert cfg.log.components == (("imap", "debug"),)
    assert cfg.metrics.listen == "127.0.0.1:9325"


def test_secrets_may_name_a_systemd_credential(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """$CREDENTIALS_DIRECTORY/x is resolved under the service; outside it the config still
    loads (an admin's one-shot command), and the file is read only when needed."""
    text = (
        IMAP_OK.replace('password_env = "IMAP_PW"', 'password_file = "$CREDENTIALS_DIRECTORY/imap"')
        + '[outbound]\npassword_file = "${CREDENTIALS_DIRECTORY}/relay"\n'
    )
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    cfg = parse(text, tmp_path)
    assert cfg.imap[0].password_file == "$CREDENTIALS_DIRECTORY/imap"  # noqa: S105 - a path
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "imap").write_text("s3cret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    cfg = parse(text, tmp_path)
    assert cfg.imap[0].password_file == str(creds / "imap")
    assert cfg.imap[0].secret() == "s3cret"
    assert cfg.desk.outbound.password_file == str(creds / "relay")


def test_leases_are_configurable_and_checked(tmp_path: Path) -> None:
    """How long a dead instance's IMAP folders and claimed mail wait for another instance
    is the admin's choice; an outbox lease that would cut every attempt short is refused."""
    cfg = parse(IMAP_OK.replace("port = 1143", "port = 1143\nlease = 10.0"), tmp_path)
    assert cfg.imap[0].lease == 10.0 and parse("", tmp_path).imap == ()
    out = parse('[outbound]\nrelay = "127.0.0.1:25"\nlease = 20.0\ntimeout = 10.0\n', tmp_path)
    assert out.desk.outbound.lease == 20.0
    assert parse("", tmp_path).desk.outbound.lease == 300.0
    with pytest.raises(ConfigError, match=r"\[outbound\] lease = 20.0: use at least twice"):
        parse('[outbound]\nrelay = "127.0.0.1:25"\nlease = 20.0\n', tmp_path)
