"""The systemd files under systemd/: the units verify clean, the service's exposure stays at
2.0 ("OK") or better, sysusers and tmpfiles apply, the example config loads, and Vosk still
recognises under the MemoryDenyWriteExecute= filter the unit sets.

``systemd-analyze verify`` checks that ExecStart= is executable, so the tests analyse a copy
whose ``/opt/buzon/.venv/bin/buzon`` is this checkout's ``buzon``; the rest is the shipped
text. Drop-ins in ``<dir>/buzon.service.d/`` next to the analysed file are applied, which is
how the port-25 drop-in is checked.
"""

from __future__ import annotations

import ctypes.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import missing
from daemon import config as config_mod
from daemon.app import STOP_GRACE
from support.audio import VoicemailAudio

ROOT = Path(__file__).resolve().parents[2]
SYSTEMD = ROOT / "systemd"
SHIPPED_BUZON = "/opt/buzon/.venv/bin/buzon"
MAX_EXPOSURE = 2.0
ENV = {**os.environ, "SYSTEMD_COLORS": "0", "SYSTEMD_PAGER": "", "SYSTEMD_LOG_COLOR": "0"}


def _tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/bin:/bin:/usr/sbin:/sbin")
    if path is None:
        missing(f"{name} (Debian package systemd)")
    assert path is not None
    return path


@pytest.fixture(scope="module")
def analyze() -> str:
    """systemd-analyze, at least version 250 (``security --offline``)."""
    path = _tool("systemd-analyze")
    out = subprocess.run([path, "--version"], capture_output=True, text=True, check=True)
    version = int(out.stdout.split()[1].split(".")[0].split("~")[0])
    if version < 250:
        missing(f"systemd-analyze >= 250 for security --offline (found {version})")
    return path


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=False, capture_output=True, text=True, env=ENV, timeout=120)


def _units(directory: Path, *, dropin: str | None = None) -> Path:
    """Copy the units into ``directory`` with ExecStart= on this checkout's buzon."""
    buzon = Path(sys.executable).with_name("buzon")
    assert buzon.is_file(), f"{buzon}: install the package in the test venv (make test does)"
    text = (SYSTEMD / "buzon.service").read_text(encoding="utf-8")
    assert f"ExecStart={SHIPPED_BUZON} " in text
    directory.mkdir(parents=True, exist_ok=True)
    service = directory / "buzon.service"
    service.write_text(text.replace(SHIPPED_BUZON, str(buzon)), encoding="utf-8")
    shutil.copy(SYSTEMD / "buzon.socket", directory / "buzon.socket")
    if dropin is not None:
        (directory / "buzon.service.d").mkdir()
        shutil.copy(SYSTEMD / dropin, directory / "buzon.service.d" / dropin)
    return service


def _verify(analyze: str, *units: Path) -> None:
    out = _run(analyze, "verify", *map(str, units))
    report = (out.stdout + out.stderr).strip()
    assert out.returncode == 0 and not report, f"systemd-analyze verify:\n{report}"


def _security(analyze: str, service: Path) -> tuple[float, str]:
    out = _run(analyze, "security", "--offline=yes", "--no-pager", str(service))
    assert out.returncode == 0, out.stdout + out.stderr
    found = re.search(r"Overall exposure level for buzon\.service: (\d+\.\d+)", out.stdout)
    assert found, out.stdout + out.stderr
    return float(found.group(1)), out.stdout


def test_service_and_socket_verify_clean(analyze: str, tmp_path: Path) -> None:
    """`systemd-analyze verify` says nothing about buzon.service and buzon.socket."""
    service = _units(tmp_path)
    _verify(analyze, service, tmp_path / "buzon.socket")


def test_service_exposure_is_ok(analyze: str, tmp_path: Path) -> None:
    """`systemd-analyze security --offline=yes` rates the service 2.0 ("OK") or better."""
    exposure, report = _security(analyze, _units(tmp_path))
    assert exposure <= MAX_EXPOSURE, report
    assert "✓ MemoryDenyWriteExecute=" in report, report


def test_port25_capability_dropin_verifies_and_stays_ok(analyze: str, tmp_path: Path) -> None:
    """With the port-25 drop-in the service gets CAP_NET_BIND_SERVICE, and only that,
    verifies clean, and still rates 2.0 or better."""
    service = _units(tmp_path, dropin="port25-capability.conf")
    _verify(analyze, service)
    exposure, report = _security(analyze, service)
    assert "✗ AmbientCapabilities=" in report, "the drop-in was not applied:\n" + report
    assert "✓ CapabilityBoundingSet=~CAP_SYS_ADMIN" in report, report
    assert exposure <= MAX_EXPOSURE, report


def test_sysusers_and_tmpfiles_create_the_user_and_directories(tmp_path: Path) -> None:
    """systemd-sysusers creates the buzon user, and systemd-tmpfiles the config, secrets and
    state directories with the owners and modes the unit expects (in a scratch root)."""
    sysusers, tmpfiles = _tool("systemd-sysusers"), _tool("systemd-tmpfiles")
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    conf = str(SYSTEMD / "buzon.sysusers.conf")
    dry = _run(sysusers, f"--root={root}", "--dry-run", conf)
    assert dry.returncode == 0, dry.stderr
    assert "Creating user 'buzon'" in dry.stdout + dry.stderr
    if os.geteuid() != 0:
        pytest.skip("creating files owned by the buzon user needs root")
    done = _run(sysusers, f"--root={root}", conf)
    assert done.returncode == 0, done.stderr
    entry = next(
        line.split(":")
        for line in (root / "etc" / "passwd").read_text(encoding="utf-8").splitlines()
        if line.startswith("buzon:")
    )
    uid, home, shell = int(entry[2]), entry[5], entry[6]
    assert uid < 1000 and home == "/var/lib/buzon" and shell == "/usr/sbin/nologin"
    (root / "etc" / "buzon").mkdir()
    (root / "etc" / "buzon" / "buzon.toml").write_text("", encoding="utf-8")
    made = _run(tmpfiles, f"--root={root}", "--create", str(SYSTEMD / "buzon.tmpfiles.conf"))
    assert made.returncode == 0, made.stderr
    expected = {
        "etc/buzon": (0o750, 0),
        "etc/buzon/buzon.toml": (0o640, 0),
        "etc/buzon/credentials": (0o700, 0),
        "var/lib/buzon": (0o750, uid),
        "var/lib/buzon/spool": (0o700, uid),
        "var/lib/buzon/attachments": (0o700, uid),
        "var/backups/buzon": (0o700, uid),
    }
    for rel, (mode, owner) in expected.items():
        st = (root / rel).stat()
        assert (st.st_mode & 0o7777, st.st_uid) == (mode, owner), rel
    assert (root / "etc/buzon/buzon.toml").stat().st_gid == uid  # the group buzon reads it


def _uncomment(text: str, *headers: str) -> str:
    """The config with the commented-out tables starting at ``headers`` switched on."""
    out, on = [], False
    for line in text.splitlines():
        if line in (f"# {h}" for h in headers):
            on = True
        elif not line.startswith("# "):
            on = False
        out.append(line[2:] if on else line)
    return "\n".join(out) + "\n"


def test_example_config_loads_and_keeps_state_in_the_state_directory(tmp_path: Path) -> None:
    """systemd/buzon.toml is a valid config whose data lives under StateDirectory=buzon; its
    IMAP and metrics examples are valid when switched on, the password a systemd credential."""
    cfg = config_mod.load(str(SYSTEMD / "buzon.toml"))
    state = Path("/var/lib/buzon")
    assert Path(cfg.storage.spool).is_relative_to(state)
    assert Path(cfg.storage.attachments).is_relative_to(state)
    assert cfg.storage.database == "sqlite:////var/lib/buzon/buzon.db"
    full = tmp_path / "buzon.toml"
    full.write_text(
        _uncomment((SYSTEMD / "buzon.toml").read_text(encoding="utf-8"), "[[imap]]", "[metrics]"),
        encoding="utf-8",
    )
    cfg = config_mod.load(str(full))
    assert [a.name for a in cfg.imap] == ["support"]
    assert cfg.imap[0].password_file.startswith("$CREDENTIALS_DIRECTORY/")
    assert cfg.metrics.listen == "127.0.0.1:9325"


def test_stop_timeout_outlasts_the_longest_drain() -> None:
    """TimeoutStopSec= leaves room for the SMTP grace, a whole parse and its commit, so a
    normal stop is never cut short by SIGKILL."""
    text = (SYSTEMD / "buzon.service").read_text(encoding="utf-8")
    found = re.search(r"^TimeoutStopSec=(\d+)s$", text, re.MULTILINE)
    assert found, "TimeoutStopSec= in seconds"
    drain = STOP_GRACE + config_mod.PipelineConfig().parse_timeout
    assert int(found.group(1)) >= drain + 15
    assert "ExecStart=/opt/buzon/.venv/bin/buzon run --config /etc/buzon/buzon.toml" in text


# The child installs systemd's MemoryDenyWriteExecute=yes filter (src/shared/seccomp-util.c,
# seccomp_memory_deny_write_execute: mmap with PROT_WRITE|PROT_EXEC, mprotect/pkey_mprotect
# with PROT_EXEC and shmat with SHM_EXEC fail with EPERM) through libseccomp, proves it holds
# (a W+X mmap is refused), then loads the model and transcribes through PyAV and Vosk.
MDWE_CHILD = r"""
import ctypes, errno, json, mmap, sys
from pathlib import Path
from transcription.job import transcribe_audio
from transcription.recognize import Recognizer

mode, model, files = sys.argv[1], sys.argv[2], sys.argv[3:]
if mode == "mdwe":
    lib = ctypes.CDLL("libseccomp.so.2")

    class Cmp(ctypes.Structure):
        _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                    ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]

    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(Cmp)]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    ALLOW, EPERM, MASKED_EQ = 0x7FFF0000, 0x00050000 | errno.EPERM, 7
    WX, X, SHM_EXEC = mmap.PROT_WRITE | mmap.PROT_EXEC, mmap.PROT_EXEC, 0o100000
    ctx = lib.seccomp_init(ALLOW)
    for name, arg, mask in (("mmap", 2, WX), ("mprotect", 2, X), ("pkey_mprotect", 2, X),
                            ("shmat", 2, SHM_EXEC)):
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr < 0:
            continue
        rule = (Cmp * 1)(Cmp(arg, MASKED_EQ, mask, mask))
        assert lib.seccomp_rule_add_array(ctx, EPERM, nr, 1, rule) == 0, name
    assert lib.seccomp_load(ctx) == 0, "seccomp_load"
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | WX)
        sys.exit("the filter is not in force: a writable+executable mapping was allowed")
    except OSError:
        pass
recognizer = Recognizer(Path(model))
out = {}
for f in files:
    t = transcribe_audio(recognizer, Path(f).read_bytes(), format_hint=Path(f).suffix)
    out[Path(f).suffix] = [t.text, len(t.words)]
print(json.dumps(out, ensure_ascii=False))
"""


def _transcribe_in_child(mode: str, model: Path, files: list[Path]) -> dict[str, list[object]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    out = subprocess.run(
        [sys.executable, "-c", MDWE_CHILD, mode, str(model), *map(str, files)],
        check=False,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, f"{mode}: exit {out.returncode}\n{out.stdout}\n{out.stderr}"
    result: dict[str, list[object]] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_vosk_recognises_under_memory_deny_write_execute(
    model_dir: Path, audio: VoicemailAudio
) -> None:
    """Under systemd's MemoryDenyWriteExecute filter the recogniser loads the model and
    decodes (PyAV) and recognises (Vosk) WAV and MP3 exactly as without it: the unit's
    MemoryDenyWriteExecute=yes costs transcription nothing."""
    if ctypes.util.find_library("seccomp") is None:
        missing("libseccomp (Debian package libseccomp2, a dependency of systemd)")
    files = [audio.files["wav"], audio.files["mp3"]]
    plain = _transcribe_in_child("plain", model_dir, files)
    guarded = _transcribe_in_child("mdwe", model_dir, files)
    assert guarded == plain
    assert all(words for _, words in plain.values()), plain
