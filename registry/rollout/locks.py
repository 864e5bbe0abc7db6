"""One promotion per route at a time, and a lock that a killed process cannot leave behind.

An OS file lock (``flock``) on ``ARBITER_HOME/locks/route-<task>.lock``: the kernel releases it
when its holder dies, even by SIGKILL, so a rerun after a kill takes over at once while a second
promotion beside a live one is refused. The file records who holds it, for the error message.

It is a lock between processes of one machine (or one shared ``ARBITER_HOME`` on a filesystem
with working ``flock``); several machines promoting the same route would need a lock in the
database MLflow runs on.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from registry.errors import ConflictError


def lock_path(home: Path, route: str) -> Path:
    return home / "locks" / f"route-{route}.lock"


@contextmanager
def route_lock(home: Path, route: str, *, purpose: str, wait_s: float = 1.0) -> Iterator[None]:
    """Hold the route's lock for the block, or raise ``ConflictError`` naming the holder. Waits up
    to ``wait_s`` first: short holders (a status probe, an auto-swap check) must not make a
    promotion fail."""
    path = lock_path(home, route)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "a+")  # noqa: SIM115 — held open for the whole block: closing it releases the lock
    try:
        _acquire(handle, path, route, wait_s)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "purpose": purpose,
                                 "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}))
        handle.flush()
        yield
    finally:
        handle.close()


def _acquire(handle, path: Path, route: str, wait_s: float) -> None:  # noqa: ANN001 — an open file
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise _busy(path, route) from None
            time.sleep(0.05)


def _busy(path: Path, route: str) -> ConflictError:
    return ConflictError(
        f"route {route!r} is busy: {describe_holder(path)}; wait for it to finish, or stop it with "
        f"`arbiter routes abort {route}`"
    )


def is_locked(home: Path, route: str) -> bool:
    """Whether a live process holds the route's lock now."""
    path = lock_path(home, route)
    if not path.exists():
        return False
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
        return False


def describe_holder(path: Path) -> str:
    try:
        holder = json.loads(path.read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        holder = {}
    if not holder:
        return "another process holds its lock"
    return f"{holder.get('purpose', 'a change')} by pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}"
