"""Where generated data goes by default: the checkout's ignored cache, else the user's cache."""

from __future__ import annotations

from pathlib import Path

import relam.cache as cache


def test_default_cache_is_the_checkouts_then_the_users(tmp_path, monkeypatch):
    assert cache.default_cache_dir() == cache.REPO_ROOT / ".cache" / "relam"  # tests run in a checkout
    monkeypatch.setattr(cache, "REPO_ROOT", tmp_path / "site-packages")  # no pyproject.toml: installed
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.default_cache_dir() == tmp_path / "xdg" / "relam"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache.default_cache_dir() == Path.home() / ".cache" / "relam"
    monkeypatch.setenv("RELAM_CACHE", str(tmp_path / "mine"))
    assert cache.cache_dir() == tmp_path / "mine" and (tmp_path / "mine").is_dir()


def test_bounded_memo_keeps_the_newest_size_entries():
    """The planners' memo: full, a new key drops the oldest; a key set again becomes the newest;
    a size under 1 is an error naming the owner."""
    import pytest

    memo = cache.BoundedMemo(2, "Planner(cache_size)")
    memo["a"], memo["b"] = 1, 2
    memo["a"] = 3  # "a" is now the newest: "b" goes first
    memo["c"] = 4
    assert list(memo.items()) == [("a", 3), ("c", 4)]
    memo["d"] = 5
    assert list(memo) == ["c", "d"] and memo.size == 2
    with pytest.raises(ValueError, match=r"Planner\(cache_size\) must be at least 1, got 0"):
        cache.BoundedMemo(0, "Planner(cache_size)")
