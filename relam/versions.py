"""Installed package versions, for provenance (demo metadata, regression context, run records)."""
from __future__ import annotations

import importlib.metadata as md
from typing import Iterable

__all__ = ["package_versions"]


def package_versions(packages: Iterable[str]) -> dict[str, str]:
    """``{distribution: version}`` of those of ``packages`` that are installed (read from their
    metadata; nothing is imported). Missing distributions are left out."""
    out = {}
    for pkg in packages:
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    return out
