import numpy as np
import pytest

from loop.embeddings import EmbeddingCache


def test_cache_round_trip_and_sharing(tmp_path):
    first = EmbeddingCache(tmp_path, "bb")
    vectors = np.arange(12, dtype=np.float32).reshape(3, 4)
    first.add(["a", "b", "c"], vectors)
    second = EmbeddingCache(tmp_path, "bb")            # another process, say
    np.testing.assert_array_equal(second.get(["c", "a"]), vectors[[2, 0]])
    assert second.missing(["a", "z", "z"]) == ["z"]
    second.add(["z"], np.ones((1, 4), np.float32))
    assert "z" in first                                 # new shards are picked up
    assert EmbeddingCache(tmp_path, "other").missing(["a"]) == ["a"]   # keyed by backbone too


def test_unfinished_shard_is_ignored(tmp_path):
    cache = EmbeddingCache(tmp_path, "bb")
    cache.add(["a"], np.ones((1, 2), np.float32))
    (tmp_path / "bb" / "crashed.tmp").write_bytes(b"half a file")
    (tmp_path / "bb" / "orphan.hashes").write_text("q\n")          # vectors never landed
    fresh = EmbeddingCache(tmp_path, "bb")
    assert fresh.missing(["a", "q"]) == ["q"]
    with pytest.raises(KeyError, match="no cached bb embedding"):
        fresh.get(["q"])
