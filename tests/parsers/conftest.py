"""Parser test fixtures: read single files of the shared corpus (``corpus`` is in tests/)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def corpus_file(corpus: Path) -> Callable[[str], bytes]:
    """Read one corpus file by its path relative to the corpus folder."""

    def read(relative: str) -> bytes:
        path = corpus / relative
        if not path.is_file():
            pytest.fail(f"corpus file {relative} is missing from {corpus}")
        return path.read_bytes()

    return read
