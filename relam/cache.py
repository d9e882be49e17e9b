"""The ignored cache folder and atomic writes (and :class:`BoundedMemo`, the in-memory memo of plans).

Everything the harness generates (demos, subgoal datasets, checkpoints, run records) lives under
one folder that git ignores, so a fresh clone carries no data and an interrupted job can resume
from what is on disk. Every write goes to a temporary file in the same folder and is renamed into
place, so a reader never sees a half-written file and a killed job leaves either the old file or
the new one.

A cached file can still be damaged (a full disk, a copy cut short, a bad sector). Loaders that
find one move it into a ``quarantine/`` folder next to it (:func:`quarantine`, kept for a
post-mortem and named in a warning) and treat it as missing, so it is made again.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import tempfile
import time
import zipfile
import zlib
from pathlib import Path
from typing import Any, Iterable

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent

log = logging.getLogger(__name__)

#: what reading a damaged ``.npz`` raises: cut short or not a zip (BadZipFile, EOFError), a bad
#: checksum (BadZipFile) or deflate stream (zlib.error), a bad array header (ValueError), an array
#: missing (KeyError)
NPZ_ERRORS = (zipfile.BadZipFile, EOFError, ValueError, KeyError, zlib.error)


class BoundedMemo(dict):
    """A dict that keeps at most ``size`` entries: setting a new key when full drops the oldest
    first (insertion order), and setting a present key moves it to the newest place.

    Why: the subgoal planners memoise a plan per (task, episode seed) and a 1M-step run makes
    thousands of them (``relam.wrappers.GroundTruthSubgoals``, ``baselines.is_reward.OracleSubgoalPlanner``);
    a plan made again is the same, so forgetting the oldest costs one replay, never a wrong result.
    Only ``memo[key] = value`` is bounded (``update`` and ``setdefault`` are not).
    """

    def __init__(self, size: int, owner: str = "BoundedMemo(size)"):
        if int(size) < 1:
            raise ValueError(f"{owner} must be at least 1, got {size}")
        super().__init__()
        self.size = int(size)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.pop(key, None)
        while len(self) >= self.size:
            del self[next(iter(self))]
        super().__setitem__(key, value)


def default_cache_dir() -> Path:
    """``<repo>/.cache/relam`` in a checkout (git ignores it); installed outside one (the package
    sits in site-packages), the user's cache folder ``$XDG_CACHE_HOME/relam`` (``~/.cache/relam``)."""
    if (REPO_ROOT / "pyproject.toml").exists():
        return REPO_ROOT / ".cache" / "relam"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "relam"


def cache_dir() -> Path:
    """Root of all generated data: ``$RELAM_CACHE`` or :func:`default_cache_dir`."""
    root = Path(os.environ.get("RELAM_CACHE") or default_cache_dir())
    root.mkdir(parents=True, exist_ok=True)
    return root


def unwritable(paths: Iterable[str | os.PathLike]) -> Path | None:
    """The first of ``paths`` (for one not made yet: its nearest existing parent) that this process
    cannot create files in, or None when it can in all of them. Writes nothing (``os.access``), so
    it is safe on a read-only cache."""
    for p in map(Path, paths):
        while not p.exists() and p.parent != p:
            p = p.parent
        if not os.access(p, os.W_OK | os.X_OK):
            return p
    return None


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"cannot serialise {type(o).__name__} to JSON")


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write ``obj`` as indented JSON (numpy scalars/arrays are converted)."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default)
    return atomic_write_bytes(path, text.encode())


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as f:
        return json.load(f)


def atomic_save_npz(path: str | os.PathLike, **arrays: Any) -> Path:
    """Atomically save arrays to a compressed ``.npz`` file."""
    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    return atomic_write_bytes(path, buf.getvalue())


def torch_bytes(obj: Any) -> bytes:
    """``obj`` as ``torch.save`` writes it (for checkpoints and content fingerprints)."""
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically ``torch.save`` ``obj`` (a checkpoint: state dicts, settings, RNG states) to ``path``."""
    return atomic_write_bytes(path, torch_bytes(obj))


def npz_problem(path: str | os.PathLike, required: Iterable[str] = ()) -> str | None:
    """What is wrong with an existing ``.npz`` file (None: nothing). Reads every member and checks
    its CRC, so a file cut short or damaged anywhere is found without building the arrays.
    Raises FileNotFoundError when there is no file."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
            names = {n[:-4] for n in z.namelist() if n.endswith(".npy")}
    except FileNotFoundError:
        raise
    except (*NPZ_ERRORS, OSError) as e:
        return f"{type(e).__name__}: {e}"
    if bad is not None:
        return f"bad CRC-32 for {bad}"
    missing = sorted(set(required) - names)
    return f"arrays missing: {', '.join(missing)}" if missing else None


def quarantine(path: str | os.PathLike, problem: str, seen: os.stat_result | None = None,
               then: str = "it is made again") -> Path | None:
    """Move a damaged cache file into ``quarantine/`` next to it and warn, naming both paths.

    ``seen``: the file's ``stat`` when it was found damaged; when the path now holds another file
    (another process moved the bad one and wrote a new one meanwhile), nothing is moved. Returns the
    file's new path, or None when nothing was moved (gone already, replaced, or not movable).
    """
    path = Path(path)
    try:
        if seen is not None:
            now = path.stat()
            if (now.st_dev, now.st_ino, now.st_mtime_ns) != (seen.st_dev, seen.st_ino, seen.st_mtime_ns):
                return None
        dst = path.parent / "quarantine" / f"{path.stem}.{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}{path.suffix}"
        dst.parent.mkdir(exist_ok=True)
        os.replace(path, dst)
    except FileNotFoundError:
        return None
    except OSError as e:
        log.warning("relam: warning: %s is damaged (%s) and cannot be moved aside (%s)", path, problem, e)
        return None
    log.warning("relam: warning: %s is damaged (%s); moved to %s, %s", path, problem, dst, then)
    return dst


def quarantined_files(root: str | os.PathLike | None = None) -> list[Path]:
    """Damaged demos and subgoal datasets moved aside under the cache (see :func:`quarantine`)."""
    root = Path(root) if root is not None else cache_dir()
    found = [*root.glob("demos/*/*/quarantine/*"), *root.glob("subgoals/*/quarantine/*")]
    return sorted(p for p in found if p.is_file())


def settings_hash(obj: dict) -> str:
    """A stable 16-hex-character key for a settings dict (sorted-key JSON, sha256)."""
    text = json.dumps(obj, sort_keys=True, default=_json_default, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
