"""Installed packages: their versions, for provenance (demo metadata, regression context, run
records), and the optional extras of ``pyproject.toml``, imported only when a backend needs them."""
from __future__ import annotations

import importlib
import importlib.metadata as md
from types import ModuleType
from typing import Iterable

__all__ = ["EXTRAS", "MissingExtraError", "import_extra", "package_versions"]

#: the optional extras of pyproject.toml and what they are for
EXTRAS = {"ray": "the Ray backend of relam run (--backend ray)",
          "pretrained": "the pretrained-weights backends (DINOv2, EVF-SAM, the VLM reward)"}


class MissingExtraError(ImportError):
    """An optional backend was asked for, but the extra that installs its packages is not installed."""


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


def import_extra(module: str, extra: str, what: str) -> ModuleType:
    """``import module``, or :class:`MissingExtraError` saying that ``what`` needs the optional
    extra ``extra`` and how to install it."""
    if extra not in EXTRAS:
        raise ValueError(f"import_extra: unknown extra {extra!r}; pyproject.toml has {sorted(EXTRAS)}")
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise MissingExtraError(
            f"{what} needs the {module.split('.')[0]!r} package of the optional extra '{extra}' "
            f"({EXTRAS[extra]}): pip install 'relam[{extra}]' (in a clone: .venv/bin/pip install -e "
            f"'.[{extra}]' -c constraints.txt) [{type(e).__name__}: {e}]") from e
