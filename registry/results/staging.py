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

Files written by the store before Delta (``results/<table>/part-*.parquet``, schema 1–5) are staged
files of one writer, ``legacy``, all numbered 1: they are read as they are until the first
maintenance pass converts them in one commit.
"""

from __future__ import annotations

import os
import re
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

STAGING = "_staging"
LEGACY_WRITER = "legacy"
_NAME = re.compile(r"^(?P<writer>[a-z0-9]+)-(?P<seq>\d{12})\.parquet$")


@dataclass(frozen=True, slots=True)
class StagedFile:
    """One flushed file not yet known to be in its table."""

    writer: str
    seq: int
    path: Path


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
            final = folder / f"{writer.id}-{writer.seq + 1:012d}.parquet"
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
    found.extend(StagedFile(LEGACY_WRITER, 1, path) for path in legacy_files(results_dir, table))
    return sorted(found, key=lambda f: (f.writer, f.seq))


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
