"""Shared fixtures for the parser tests: where the shared email corpus lives."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

# The checkout (/work/main) sits next to shared/ (/work/shared/corpus).
CORPUS = Path(__file__).resolve().parents[2].parent / "shared" / "corpus"


@pytest.fixture
def corpus() -> Path:
    """The shared corpus folder; the test is skipped when it is not there."""
    if not CORPUS.is_dir():
        pytest.skip(f"shared email corpus not found at {CORPUS}")
    return CORPUS


@pytest.fixture
def corpus_file(corpus: Path) -> Callable[[str], bytes]:
    """Read one corpus file by its path relative to the corpus folder."""

    def read(relative: str) -> bytes:
        path = corpus / relative
        if not path.is_file():
            pytest.skip(f"corpus file {relative} not found")
        return path.read_bytes()

    return read
