"""What the benches share: CPU accounting of a process tree and the base daemon config.

Benches run as scripts (``python bench/x.py``), so this folder is on sys.path.
"""

from __future__ import annotations

import os
from pathlib import Path

BASE_TOML = (
    "[storage]\n"
    'database = "sqlite:///b.db"\n'
    'spool = "spool"\n'
    'attachments = "att"\n'
    "[smtp]\n"
    'hostname = "bench.buzon.invalid"\n'
    "[log]\n"
    'level = "warning"\n'
)


def tree_cpu(pid: int) -> float:
    """CPU seconds (user+system, reaped children included) of a process tree (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            stat = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in stat[11:15])  # utime stime cutime cstime
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError, IndexError):
            continue  # exited meanwhile
    return total / tick
