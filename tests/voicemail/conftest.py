"""Voicemail fixtures: parts whose [transcription] points at the real Korean Vosk model.

The recordings (`audio`) and the model (`model_dir`) are session fixtures in tests/conftest.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from daemon import config as config_mod
from daemon.parts import Parts, open_parts


@pytest.fixture
def vm_parts(
    config_factory: Callable[..., config_mod.Config], model_dir: Path
) -> Iterator[tuple[config_mod.Config, Parts]]:
    """Parts on SQLite, with [transcription] pointed at the Korean model, one recogniser."""
    cfg = config_factory(
        f'[transcription]\nmodel = "{model_dir}"\nworkers = 1\nretry_delay = 0.0\n'
        "max_attempts = 2\n"
    )
    with open_parts(cfg, recover=True) as p:
        yield cfg, p
