"""The recorder's promise to a reader: once ``flush()`` returns, every row added before it is in the
store, even the batch its writer thread had already taken and was still writing."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from registry.results.recorder import Recorder
from registry.results.store import ResultsStore, now_utc


class SlowDiskStore(ResultsStore):
    """FAKE (a timing we cannot otherwise cause on demand): a real store whose writes wait until the
    test lets them go, so the writer thread is caught half-way through a flush."""

    def __init__(self, home: Path) -> None:
        super().__init__(home)
        self.writing = threading.Event()
        self.go = threading.Event()

    def append(self, table: str, rows: Sequence[Mapping[str, Any]], *, may_commit: bool = True) -> Path | None:
        self.writing.set()
        assert self.go.wait(30), "the test never let the write go"
        return super().append(table, rows, may_commit=may_commit)


def test_a_flush_waits_for_the_batch_the_writer_thread_is_writing(tmp_path: Path) -> None:
    store = SlowDiskStore(tmp_path)
    recorder = Recorder(store, flush_s=0.01)
    recorder.start()
    recorder.add("calls", {"call_id": "c-1", "ts": now_utc(), "route": "qa", "model": "m", "version": 1, "ok": True})
    assert store.writing.wait(10)  # the writer thread took the row off the queue and is writing it
    flushed = threading.Event()
    reader = threading.Thread(target=lambda: (recorder.flush(), flushed.set()))
    reader.start()
    assert not flushed.wait(0.3)  # still writing: a flush that returned now would let a query miss c-1
    store.go.set()
    reader.join(10)
    assert flushed.is_set()
    assert store.query("select call_id from calls") == [{"call_id": "c-1"}]
    recorder.close()
