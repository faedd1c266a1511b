"""Checksums and verified downloads on small synthetic files (no network, no shared data)."""

import hashlib

import pytest

from fedcore.datasets import DatasetError
from fedcore.datasets.files import download_file, sha256_file, verify_sha256

PAYLOAD = bytes(range(256)) * 5000  # > 1 MiB, so hashing spans several chunks


@pytest.fixture
def mirror(tmp_path):
    folder = tmp_path / "mirror"
    folder.mkdir()
    (folder / "blob.bin").write_bytes(PAYLOAD)
    return folder


def test_streamed_hash_equals_one_shot_hash(mirror):
    assert sha256_file(mirror / "blob.bin") == hashlib.sha256(PAYLOAD).hexdigest()


def test_verify_reports_expected_and_actual(mirror):
    with pytest.raises(DatasetError, match=r"blob\.bin") as caught:
        verify_sha256(mirror / "blob.bin", "0" * 64)
    assert "0" * 64 in str(caught.value) and sha256_file(mirror / "blob.bin") in str(caught.value)


def test_download_writes_verified_file(mirror, tmp_path):
    expected = hashlib.sha256(PAYLOAD).hexdigest()
    path = download_file("blob.bin", tmp_path / "out" / "sub", expected, [mirror.as_uri()])
    assert path.read_bytes() == PAYLOAD
    assert [p.name for p in path.parent.iterdir()] == ["blob.bin"]


def test_download_falls_back_to_next_mirror(mirror, tmp_path):
    expected = hashlib.sha256(PAYLOAD).hexdigest()
    dead = (tmp_path / "dead").as_uri()
    path = download_file("blob.bin", tmp_path / "out", expected, [dead, mirror.as_uri()])
    assert path.read_bytes() == PAYLOAD


def test_mismatched_download_is_rejected_and_leaves_nothing(mirror, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(DatasetError, match="sha256") as caught:
        download_file("blob.bin", out, "f" * 64, [mirror.as_uri()])
    assert "f" * 64 in str(caught.value)
    assert list(out.iterdir()) == []


def test_every_failed_mirror_is_reported(tmp_path):
    urls = [(tmp_path / "a").as_uri(), (tmp_path / "b").as_uri()]
    with pytest.raises(DatasetError) as caught:
        download_file("blob.bin", tmp_path / "out", "0" * 64, urls)
    assert all(url in str(caught.value) for url in urls)


def test_empty_mirror_list_is_a_programming_error(tmp_path):
    with pytest.raises(ValueError, match="base URL"):
        download_file("blob.bin", tmp_path, "0" * 64, [])
