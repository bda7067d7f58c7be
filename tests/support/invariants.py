"""The invariant check of RELIABILITY.md as one assertion, for any test that stored mail.

It runs the checks of ``buzon verify`` (``daemon/verify.py``,
``daemon/verify_command.py``) in this process, so a
test that drove the daemon or the pipeline can end with ``assert_invariants(cfg)``.
"""

from __future__ import annotations

from pathlib import Path

from daemon import config as config_mod
from daemon.verify import ERROR, WARNING, Finding
from daemon.verify_command import format_findings, verify_config


def assert_invariants(
    config: config_mod.Config | str | Path, *, allow_warnings: bool = True
) -> list[Finding]:
    """Raise AssertionError listing every error (and warning, unless allowed); the findings.

    ``config``: a loaded config, or the path of its TOML file (``Daemon.config``).
    Every open ticket's SLA clocks are replayed, not a sample: test databases are small.
    """
    cfg = config if isinstance(config, config_mod.Config) else config_mod.load(str(config))
    findings = verify_config(cfg, sla_limit=None)
    failing = {ERROR} if allow_warnings else {ERROR, WARNING}
    bad = [f for f in findings if f.severity in failing]
    if bad:
        raise AssertionError("invariants violated:\n" + "\n".join(format_findings(bad)))
    return findings
