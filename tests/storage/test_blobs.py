"""Attachment bytes are addressed by hash; no sender-chosen name reaches the filesystem."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from storage.blobs import BlobStore


def test_put_is_content_addressed_and_idempotent(tmp_path: Path) -> None:
    """The same bytes twice make one file under their SHA-256."""
    store = BlobStore(tmp_path)
    digest = store.put(b"pdf bytes")
    assert digest == hashlib.sha256(b"pdf bytes").hexdigest()
    assert store.put(b"pdf bytes") == digest
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files == [tmp_path / digest[:2] / digest[2:4] / digest]
    assert store.get(digest) == b"pdf bytes"


@pytest.mark.parametrize("bad", ["../../etc/passwd", "a" * 63, "Z" * 64, "/" + "a" * 63])
def test_sec03_paths_are_never_built_from_names(tmp_path: Path, bad: str) -> None:
    """SEC-03: anything that is not a hex digest is refused as a blob key."""
    with pytest.raises(ValueError, match="not a SHA-256"):
        BlobStore(tmp_path).path_for(bad)


def test_corrupt_blob_is_detected(tmp_path: Path) -> None:
    """A blob whose bytes changed on disk is reported, not served."""
    store = BlobStore(tmp_path)
    digest = store.put(b"original")
    store.path_for(digest).write_bytes(b"tampered")
    with pytest.raises(ValueError, match="corrupt"):
        store.get(digest)
