"""The local node's store: files on disk behind an LRU cache bounded in bytes. Torch-free, no sockets."""

from __future__ import annotations

import pytest

from syftd.node.store import Store


def test_the_cache_keeps_the_most_recently_used_files_within_its_byte_bound(tmp_path):
    store = Store(tmp_path, cache_bytes=25)
    paths = [store.checkpoint_path("m", "1", n) for n in range(1, 5)]
    for n, path in enumerate(paths):
        store.write(path, bytes([n]) * 10)
    assert store.cached_bytes == 20
    assert [store.cached(p) is not None for p in paths] == [False, False, True, True]
    assert store.read(paths[0]) == bytes([0]) * 10  # from the file, and back into the cache
    assert [store.cached(p) is not None for p in paths] == [True, False, False, True]
    store.write(paths[1], b"x" * 30)  # larger than the whole cache: kept on disk only
    assert store.cached(paths[1]) is None and store.read(paths[1]) == b"x" * 30
    assert store.cached_bytes <= 25


def test_diffs_written_without_caching_leave_the_cache_alone_and_replace_a_cached_copy(tmp_path):
    store = Store(tmp_path, cache_bytes=100)
    path = store.diff_path("m", "1", 3, 7)
    assert path == tmp_path / "m" / "1" / "diffs" / "cycle-3-7.pb"
    store.write(path, b"old")
    store.write(path, b"new", cache=False)
    assert store.cached(path) is None and store.cached_bytes == 0
    assert store.read(path, cache=False) == b"new" and store.cached(path) is None


def test_names_become_single_path_components_and_a_temporary_store_is_removed_on_close():
    store = Store(cache_bytes=0)
    root = store.root
    assert store.checkpoint_path("a/b", "..", 1) == root / "a%2Fb" / "%2E%2E" / "checkpoint-1.pb"
    assert store.checkpoint_path("", ".", 1) == root / "%00" / "%2E" / "checkpoint-1.pb"
    store.write(store.checkpoint_path("a/b", "..", 1), b"x")
    store.close()
    store.close()
    assert not root.exists()
    with pytest.raises(ValueError, match="cache_bytes must be >= 0"):
        Store(root, cache_bytes=-1)
