"""The staging folder: where a flush lands in milliseconds, before it joins its Delta table.

A Delta commit reloads the table's state and takes tens of milliseconds, more as the table grows
(measured in docs/results.md); a flush must not wait on that, nor on a compaction. So a writer's
rows go first into one plain Parquet file, ``results/_staging/<table>/<writer>-<seq>.parquet``
(written under a temporary name, renamed into place: a reader never sees half a file), and the
maintenance pass (:mod:`registry.results.maintenance`) later moves them into the table.

Exactly once: each process is a *writer* with its own id, and numbers its files 1, 2, 3… in the
order they appear (the number is taken and the file renamed under one lock). The commit that adds a
writer's files to the table records, in the same atomic Delta commit, the highest number it added
(a Delta *application transaction*). So a staged file whose number is at most its writer's recorded
number is already in the table, whatever was killed when — readers skip it, maintenance deletes it.

A listing of the folder is not a snapshot of it: a file renamed in while the directory is read may
be missed even though a later one is seen (ext4 returns names in hash order). A writer's numbers
have no gaps, so :func:`pending` looks up each number missing between the recorded one and the
highest it saw — otherwise a commit recording the highest would count the missed file as committed.

Files written by the store before Delta (``results/<table>/part-*.parquet``, schema 1–5) are staged
files of one writer, ``legacy``, numbered by their modification time in microseconds: they are read as
they are until the first maintenance pass converts them in one commit. One written after that (an older
arbiter still serving during the upgrade) has a later time, so it is past the recorded number and is
converted by the next pass, not taken for converted.
"""

from __future__ import annotations

import os
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from registry.results.schemas import SCHEMAS

STAGING = "_staging"
LEGACY_WRITER = "legacy"
MISSED = 32  # numbers looked up below each listed one: more than a writer renames during one listing
_NAME = re.compile(r"^(?P<writer>[a-z0-9]+)-(?P<seq>\d{12})\.parquet$")


@dataclass(frozen=True, slots=True)
class StagedFile:
    """One flushed file not yet known to be in its table."""

    writer: str
    seq: int
    path: Path

    def renumbered(self, seq: int) -> StagedFile:
        """The same writer's file numbered ``seq``, in the same folder."""
        return StagedFile(self.writer, seq, self.path.with_name(_name(self.writer, seq)))


class _Writer:
    """This process's identity and file counter for one results folder."""

    def __init__(self) -> None:
        self.id = f"w{os.getpid()}x{uuid.uuid4().hex[:10]}"
        self.seq = 0
        self.lock = threading.Lock()


_writers: dict[tuple[int, Path], _Writer] = {}  # one per (process, results folder): a fork is a new writer
_writers_lock = threading.Lock()


def _writer(results_dir: Path) -> _Writer:
    key = (os.getpid(), results_dir.resolve())
    with _writers_lock:
        writer = _writers.get(key)
        if writer is None:
            writer = _writers[key] = _Writer()
        return writer


def _name(writer: str, seq: int) -> str:
    return f"{writer}-{seq:012d}.parquet"


def staging_dir(results_dir: Path, table: str) -> Path:
    return results_dir / STAGING / table


def stage(results_dir: Path, table: str, rows: pa.Table) -> Path:
    """Write ``rows`` as this process's next staged file of ``table``; returns its path.

    The file is written under a temporary name first and numbered only once it is whole, so a
    failed write (a full disk) leaves no gap in the writer's numbers."""
    folder = staging_dir(results_dir, table)
    folder.mkdir(parents=True, exist_ok=True)
    writer = _writer(results_dir)
    temporary = folder / f".{writer.id}-{uuid.uuid4().hex[:8]}.tmp"
    try:
        pq.write_table(rows, temporary, compression="zstd")
        with writer.lock:
            final = folder / _name(writer.id, writer.seq + 1)
            os.replace(temporary, final)
            writer.seq += 1
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return final


def staged(results_dir: Path, table: str) -> list[StagedFile]:
    """Every staged file of ``table`` (legacy ones included), in each writer's order."""
    found: list[StagedFile] = []
    folder = staging_dir(results_dir, table)
    if folder.is_dir():
        with os.scandir(folder) as entries:
            for entry in entries:
                match = _NAME.match(entry.name)
                if match:
                    found.append(StagedFile(match["writer"], int(match["seq"]), Path(entry.path)))
    for path in legacy_files(results_dir, table):
        try:  # numbered by when it was written (µs): one written after a conversion is past its number
            found.append(StagedFile(LEGACY_WRITER, path.stat().st_mtime_ns // 1000, path))
        except FileNotFoundError:
            pass  # converted and deleted since the glob
    return sorted(found, key=lambda f: (f.writer, f.seq))


def pending(files: list[StagedFile], committed: Callable[[str], int]) -> list[StagedFile]:
    """The files of ``files`` (one listing, from :func:`staged`) not in the table yet: numbered past
    their writer's ``committed`` number. The :data:`MISSED` numbers just below each listed one (and
    past ``committed``) that the listing lacks are looked up by name: the listing may have missed them
    (module docstring); one still missing was quarantined, and is not pending. Only those: a listing
    misses only files renamed in while it ran, and a stray name numbered in the billions must not
    cost a billion look-ups."""
    by_writer: dict[str, list[StagedFile]] = {}
    for f in files:
        by_writer.setdefault(f.writer, []).append(f)
    found: list[StagedFile] = []
    for writer, listed in by_writer.items():
        done = committed(writer)
        waiting = sorted((f for f in listed if f.seq > done), key=lambda f: f.seq)
        found.extend(waiting)
        if writer == LEGACY_WRITER:  # numbered by time, not 1, 2, 3…: nothing to look up
            continue
        below = done
        for f in waiting:
            for seq in range(max(below + 1, f.seq - MISSED), f.seq):
                if (missed := f.renumbered(seq)).path.exists():
                    found.append(missed)
            below = f.seq
    return sorted(found, key=lambda f: (f.writer, f.seq))


def schema_problem(schema: pa.Schema, table: str) -> str | None:
    """Why a Parquet file of ``schema`` is not one of ``table``'s (None: it is). Its columns must be
    the table's and of the table's types — a column of another type would be cast, a foreign file's
    numbers read as call ids — and ``ts`` among them (it decides the day). Every file the store ever
    wrote passes: its columns are those of its schema version, and no column has changed type."""
    expected = SCHEMAS[table]
    foreign = [name for name in schema.names if expected.get_field_index(name) < 0]
    if foreign:
        return f"columns {foreign} are not in the {table} table"
    mistyped = [f"{f.name} is {f.type}" for f in schema if f.type != expected.field(f.name).type]
    if mistyped:
        return f"{', '.join(mistyped)}, not the {table} table's type"
    return None if "ts" in schema.names else "it has no ts column"


def remove_stale_temporaries(results_dir: Path, table: str, older_than_s: float) -> int:
    """Delete temporary files a writer killed mid-write left behind (a live write takes milliseconds;
    ``older_than_s`` is far longer); returns how many."""
    folder = staging_dir(results_dir, table)
    if not folder.is_dir():
        return 0
    cutoff = time.time() - older_than_s
    removed = 0
    for path in folder.glob(".*.tmp"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            pass
    return removed


def legacy_files(results_dir: Path, table: str) -> list[Path]:
    """Files the store wrote before Delta: ``results/<table>/part-*.parquet`` at the table's top."""
    folder = results_dir / table
    return sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []


def foreign_files(results_dir: Path, table: str) -> list[Path]:
    """Files in the staging folder that no writer of ours named (a copy, a stray download): never read."""
    folder = staging_dir(results_dir, table)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if not _NAME.match(p.name) and not p.name.startswith("."))
