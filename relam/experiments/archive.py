"""Results that outlive a machine: export the run records to a tarball, import them elsewhere.

An archive (``relam export OUT.tar.gz``) holds the run records of the store -- finished runs and
failed ones, so that a table made from it says what the source's table says; never the checkpoints
or scratch files under ``results/work/`` -- as::

    relam-records/manifest.json          format, when and where it was made, sha256 of each record
    relam-records/runs/<key>.json        one record each, byte for byte as in the store

``relam import IN.tar.gz`` checks the whole archive before it writes anything: every member must be
one of those files (no links, no other paths), the manifest must list exactly the records present,
each with its sha256, and each record must be a run record whose ``key`` is its file name. Any
problem refuses the archive with one message naming it, and the store is left as it was. Records
are then written with the store's atomic writes, each under its run's lock; a record already
present is kept (skipped), except that a finished (``ok``) record replaces a local failed one.
Should a write fail midway, the records written by this import are removed again (and replaced
ones put back), so an import adds all of its new records or none.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import tarfile
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from filelock import Timeout

from relam.cache import atomic_write_bytes
from relam.experiments.store import RECORD_SCHEMA, ResultStore, git_commit

__all__ = ["ARCHIVE_FORMAT", "ArchiveError", "ImportSummary", "export_records", "import_records",
           "read_archive"]

ARCHIVE_FORMAT = "relam-records/1"
_ROOT = "relam-records"
_MANIFEST = f"{_ROOT}/manifest.json"
#: largest member accepted (a run record is a few kB; its curve at most some hundred kB)
_MAX_MEMBER = 64 * 1024 * 1024


class ArchiveError(ValueError):
    """An archive that cannot be imported; the message says what is wrong with it."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def export_records(out: str | os.PathLike, store: ResultStore | None = None,
                   keys: Iterable[str] | None = None) -> list[str]:
    """Write the readable records of ``store`` -- only those of ``keys`` when given -- to the
    tarball ``out``, atomically. Returns the exported keys."""
    store = store or ResultStore()
    wanted = None if keys is None else set(keys)
    files: dict[str, bytes] = {}
    for key in store.keys():
        if wanted is not None and key not in wanted:
            continue
        if store.get(key) is None:  # an unreadable record is quarantined (and warned about) here
            continue
        files[key] = store.record_path(key).read_bytes()
    manifest = {"format": ARCHIVE_FORMAT, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "host": platform.node(), "git_commit": git_commit(), "record_schema": RECORD_SCHEMA,
                "records": {k: _sha256(v) for k, v in sorted(files.items())}}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        members = [(_MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())]
        members += [(f"{_ROOT}/runs/{k}.json", v) for k, v in sorted(files.items())]
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    atomic_write_bytes(out, buf.getvalue())
    return sorted(files)


def read_archive(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The manifest and the records (key -> file bytes) of an archive, all checked; raises
    :class:`ArchiveError` naming the first problem."""
    path = Path(path)
    where = f"{path} is not a relam records archive"
    try:
        with tarfile.open(path, mode="r:*") as tar:
            members = {}
            for m in tar:
                if not m.isfile():
                    raise ArchiveError(f"{where}: member {m.name!r} is not a plain file")
                if m.name != _MANIFEST and not (m.name.startswith(f"{_ROOT}/runs/") and m.name.endswith(".json")
                                                 and m.name.count("/") == 2):
                    raise ArchiveError(f"{where}: unexpected member {m.name!r} (expected {_MANIFEST} and "
                                       f"{_ROOT}/runs/<key>.json)")
                if m.size > _MAX_MEMBER:
                    raise ArchiveError(f"{where}: member {m.name!r} is {m.size} bytes, more than a record can be")
                if m.name in members:
                    raise ArchiveError(f"{where}: member {m.name!r} appears twice")
                members[m.name] = tar.extractfile(m).read()
    except FileNotFoundError:
        raise
    except ArchiveError:
        raise
    except (tarfile.TarError, EOFError, OSError, ValueError, zlib.error) as e:  # gzip's errors are OSErrors
        raise ArchiveError(f"{path} is corrupt or not a .tar.gz archive ({type(e).__name__}: {e})") from e
    return _check(path, members)


def _check(path: Path, members: dict[str, bytes]) -> tuple[dict[str, Any], dict[str, bytes]]:
    where = f"{path} is not a relam records archive"
    if _MANIFEST not in members:
        raise ArchiveError(f"{where}: it has no {_MANIFEST} (make archives with `relam export`)")
    try:
        manifest = json.loads(members.pop(_MANIFEST))
    except (ValueError, UnicodeDecodeError) as e:
        raise ArchiveError(f"{path}: {_MANIFEST} is not valid JSON ({e})") from e
    if not isinstance(manifest, dict) or manifest.get("format") != ARCHIVE_FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise ArchiveError(f"{path}: archive format {found!r}, this relam reads {ARCHIVE_FORMAT!r}")
    listed = manifest.get("records")
    if not isinstance(listed, dict):
        raise ArchiveError(f"{path}: {_MANIFEST} has no 'records' table")
    records = {name.rsplit("/", 1)[1][:-5]: data for name, data in members.items()}
    missing, extra = sorted(set(listed) - set(records)), sorted(set(records) - set(listed))
    if missing or extra:
        raise ArchiveError(f"{path}: the manifest and the records disagree (listed but absent: "
                           f"{missing[:5] or 'none'}; present but not listed: {extra[:5] or 'none'})")
    for key, data in records.items():
        if _sha256(data) != listed[key]:
            raise ArchiveError(f"{path}: record {key} does not match its sha256 in the manifest (damaged)")
        try:
            rec = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise ArchiveError(f"{path}: record {key} is not valid JSON ({e})") from e
        if not isinstance(rec, dict) or rec.get("key") != key or "status" not in rec:
            raise ArchiveError(f"{path}: record {key} is not a run record with key {key!r}")
        if rec.get("schema") != RECORD_SCHEMA:
            raise ArchiveError(f"{path}: record {key} has record schema {rec.get('schema')!r}; this relam "
                               f"reads schema {RECORD_SCHEMA}")
    return manifest, records


@dataclass
class ImportSummary:
    """What an import did, by key."""

    imported: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)  # a failed local record replaced by a finished one
    skipped: list[str] = field(default_factory=list)   # a record was already there
    busy: list[str] = field(default_factory=list)      # being run here right now: left to that run
    manifest: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        src = self.manifest.get("host") or "?"
        return (f"{len(self.imported) + len(self.replaced)} records imported ({len(self.replaced)} of them "
                f"replacing failed runs), {len(self.skipped)} already present, {len(self.busy)} being run here "
                f"now (left alone); archive made on {src} at {self.manifest.get('created_at', '?')}")


def import_records(path: str | os.PathLike, store: ResultStore | None = None) -> ImportSummary:
    """Add the records of an archive to ``store`` (see the module docstring); all or nothing."""
    store = store or ResultStore()
    manifest, records = read_archive(path)
    summary = ImportSummary(manifest=manifest)
    written: list[tuple[str, bytes | None]] = []  # (key, the bytes it replaced) for a roll-back
    try:
        for key in sorted(records):
            lock = store.lock(key)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                summary.busy.append(key)
                continue
            try:
                local = store.get(key, locked=True)
                if local is not None and (local.get("status") == "ok" or
                                          json.loads(records[key]).get("status") != "ok"):
                    summary.skipped.append(key)
                    continue
                before = store.record_path(key).read_bytes() if local is not None else None
                atomic_write_bytes(store.record_path(key), records[key])
                written.append((key, before))
                (summary.replaced if local is not None else summary.imported).append(key)
            finally:
                lock.release()
    except BaseException:
        for key, before in reversed(written):
            if before is None:
                store.record_path(key).unlink(missing_ok=True)
            else:
                atomic_write_bytes(store.record_path(key), before)
        raise
    return summary
