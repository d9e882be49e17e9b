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
