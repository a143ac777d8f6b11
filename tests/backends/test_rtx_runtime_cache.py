"""The TensorRT-RTX runtime cache is executable code: used only when its record and bytes check out."""

from __future__ import annotations

import logging
import os

import pytest

from liverlesion.backends import rtx_runtime_cache as cache

KEY = cache.RuntimeCacheKey(engine_sha256="ab" * 32, tensorrt_rtx="1.7.1.116", gpu_name="NVIDIA RTX 4000 Ada",
                            compute_capability="8.9", driver_version=13000)


@pytest.fixture
def folder(tmp_path):
    found = cache.cache_folder(tmp_path / "root", KEY)
    assert found is not None
    return found


def test_round_trip_and_private_files(folder):
    assert cache.read_cache(folder, KEY) is None  # nothing yet
    assert cache.write_cache(folder, KEY, b"kernels" * 10)
    assert cache.read_cache(folder, KEY) == b"kernels" * 10
    if hasattr(os, "getuid"):
        for path in folder.iterdir():
            assert path.stat().st_mode & 0o077 == 0, path


@pytest.mark.parametrize("field, value", [("engine_sha256", "cd" * 32), ("tensorrt_rtx", "1.7.2.1"),
                                          ("driver_version", 12080)])
def test_a_cache_for_another_engine_runtime_or_driver_is_not_used(folder, field, value, caplog):
    cache.write_cache(folder, KEY, b"kernels")
    other = cache.RuntimeCacheKey(**{**KEY.to_dict(), field: value})
    with caplog.at_level(logging.WARNING):
        assert cache.read_cache(folder, other) is None
    assert "another engine" in caplog.text


def test_other_gpus_keep_their_own_cache(folder):
    cache.write_cache(folder, KEY, b"ada")
    other = cache.RuntimeCacheKey(**{**KEY.to_dict(), "gpu_name": "NVIDIA GeForce RTX 5090",
                                     "compute_capability": "12.0"})
    cache.write_cache(folder, other, b"blackwell")
    assert (cache.read_cache(folder, KEY), cache.read_cache(folder, other)) == (b"ada", b"blackwell")


def test_changed_bytes_are_not_handed_to_tensorrt(folder, caplog):
    cache.write_cache(folder, KEY, b"kernels")
    (folder / f"{KEY.stem}.cache").write_bytes(b"kernelz")
    with caplog.at_level(logging.WARNING):
        assert cache.read_cache(folder, KEY) is None
    assert "does not match" in caplog.text


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="no file ownership on this OS")
def test_a_blob_writable_by_others_is_refused(folder, caplog):
    cache.write_cache(folder, KEY, b"kernels")
    os.chmod(folder / f"{KEY.stem}.cache", 0o666)
    with caplog.at_level(logging.WARNING):
        assert cache.read_cache(folder, KEY) is None
    assert "writable by others" in caplog.text


def test_a_linked_blob_is_refused(folder, tmp_path):
    cache.write_cache(folder, KEY, b"kernels")
    target = tmp_path / "elsewhere"
    target.write_bytes(b"kernels")
    (folder / f"{KEY.stem}.cache").unlink()
    (folder / f"{KEY.stem}.cache").symlink_to(target)
    assert cache.read_cache(folder, KEY) is None


def test_a_malformed_record_is_refused(folder):
    cache.write_cache(folder, KEY, b"kernels")
    (folder / f"{KEY.stem}.json").write_text("{not json")
    assert cache.read_cache(folder, KEY) is None


def test_empty_or_huge_blobs_are_not_written(folder, monkeypatch):
    assert not cache.write_cache(folder, KEY, b"")
    monkeypatch.setattr(cache, "MAX_CACHE_BYTES", 4)
    assert not cache.write_cache(folder, KEY, b"12345")
