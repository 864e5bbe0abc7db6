"""Tasks: a user's task file recorded as immutable versions, and the one place any command resolves
a task name.

``TaskCatalog.add(path)`` validates a task file and its data (``taskspec``, ``datasets``, the prompt
rendered for every item in its sandbox, custom scorers imported) and records a snapshot of them
under ``ARBITER_HOME/tasks/<name>/<version>/``: the spec as written, the data, any scorer module
beside it, and ``version.json``. The version's ``sha256`` covers all of those bytes, so editing any
of them makes a new version and a benchmark run names exactly what it measured; a snapshot is never
changed, so an old run's task can always be read back. A name that exists with different content
is refused unless the caller asks for a new version, so one person's ``support`` never silently
replaces another's.

Task files in the datasets folder (``settings.datasets_dir``: the four shipped tasks, or any a user
drops there) are recorded the first time a command asks for them, and again when they change:
they are tracked, rather than added by hand.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from registry.errors import DatasetError, NotFoundError
from registry.evaluation import progress
from registry.evaluation.datasets import parse_rows, read_items
from registry.evaluation.scorers import PythonScorer
from registry.evaluation.scoring import ItemScore, TaskScoring, scorer_file
from registry.evaluation.taskspec import ClassificationSpec, TaskSpec, read_spec
from registry.evaluation.templates import Messages, PromptTemplate
from registry.providers.base import GenerationRequest
from registry.selection.contract import TaskContract
from registry.selection.criteria import Criteria
from registry.settings import SHIPPED_DATASETS
from registry.spec import NAME_PATTERN

if TYPE_CHECKING:
    import pandas as pd

    from registry.evaluation.judge import ModelBasedJudge
    from registry.settings import Settings
    from registry.spec import VersionRecord

SPEC_FILE = "task.yaml"
VERSION_FILE = "version.json"
TASK_FILE_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class Item:
    """One validation item; ``data`` holds the declared fields of its row."""

    id: str
    task: str
    data: dict[str, Any]


@dataclass(frozen=True, eq=False)
class TaskVersion:
    """One recorded version of a task, compiled: its items, prompt and scoring ready to run. Two are
    equal when they are the same version of the same content, however each was loaded."""

    name: str
    version: int
    sha256: str  # over the spec, the data and any scorer module beside them
    data_sha256: str  # the data file alone: the runs' ``dataset_sha256``
    spec: TaskSpec
    items: tuple[Item, ...]
    prompt: PromptTemplate
    scoring: TaskScoring
    directory: Path  # the snapshot (or, for ``validate``, the folder of the file checked)
    data_path: Path
    source: str  # where the task file was added from
    added: str
    live: TaskScoring | None = None  # the spec's live scorers, compiled (registry/quality/live_scoring.py)

    @property
    def ref(self) -> str:
        return f"{self.name}/{self.version}"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TaskVersion):
            return NotImplemented
        return (self.name, self.version, self.sha256) == (other.name, other.version, other.sha256)

    def __hash__(self) -> int:
        return hash((self.name, self.version, self.sha256))

    @property
    def needs_judge(self) -> bool:
        return self.scoring.needs_judge

    @property
    def classification(self) -> ClassificationSpec | None:
        """The fixed labels and the field a classifier reads, for a classification task (else None)."""
        return self.spec.classification

    @property
    def contract(self) -> TaskContract:
        """Who can serve this task (registry/selection/contract.py), as data the wings below take."""
        labels = self.classification.labels if self.classification is not None else None
        return TaskContract(self.ref, self.spec.capabilities, labels)

    def missing_capabilities(self, record: VersionRecord) -> list[str]:
        """What this task needs that the version cannot do (empty: it can run the task): a text
        model's missing capabilities; a classifier's missing labels, or all a task that is not a
        classification task needs (:meth:`TaskContract.missing`)."""
        return self.contract.missing(record.spec)

    def cannot_serve(self, record: VersionRecord) -> str | None:
        """One line saying why the version cannot serve this task, or None when it can."""
        return self.contract.cannot_serve(record)

    def messages(self, item: Item) -> Messages:
        return self.prompt.messages(item.data, where=f"item {item.id}")

    def request_for(self, record: VersionRecord, item: Item, messages: Messages) -> GenerationRequest:
        """What ``record`` is sent for ``item``: a text model the rendered prompt, a classifier the raw
        text of the task's ``classification.input`` field (a prompt would be words it never saw)."""
        if record.spec.is_classifier and self.classification is not None:
            return GenerationRequest(prompt=str(item.data[self.classification.input]))
        return self.request(messages)

    def request(self, messages: Messages) -> GenerationRequest:
        generation = self.spec.generation
        return GenerationRequest(
            messages=tuple(messages), max_tokens=generation.max_tokens, temperature=generation.temperature,
            stop=generation.stop,
            json_schema=json.dumps(generation.json_schema) if generation.json_schema is not None else None,
        )

    def score(self, item: Item, messages: Messages, answer: str, judge: ModelBasedJudge | None = None) -> ItemScore:
        scoring = self.scoring.with_judge(judge) if judge is not None else self.scoring
        return scoring.score(item.data, messages[-1]["content"], answer)

    def summary(self) -> dict[str, Any]:
        """What ``arbiter tasks list|show --json`` print."""
        spec = self.spec
        return {
            "name": self.name, "version": self.version, "ref": self.ref, "sha256": self.sha256,
            "data_sha256": self.data_sha256, "description": spec.description, "capabilities": list(spec.capabilities),
            "n_items": len(self.items), "fields": {k: f.type for k, f in spec.data.fields.items()},
            "scorers": [{"scorer": s.scorer, "label": s.label, "weight": s.weight, "reference_free": s.reference_free}
                        for s in spec.scoring.scorers],
            "combine": spec.scoring.combine, "reference_free_scorers": list(spec.reference_free_scorers),
            "judge_criteria": list(spec.judge_criteria), "max_tokens": spec.generation.max_tokens,
            "source": self.source, "added": self.added, "directory": str(self.directory),
            "classification": None if spec.classification is None else spec.classification.model_dump(mode="json"),
            "live": None if spec.live is None else {
                "scorers": [{"scorer": s.scorer, "label": s.label, "weight": s.weight} for s in spec.live.scorers],
                "combine": spec.live.combine, "judge": list(spec.live.judge),
            },
        }


def compile_task(path: Path) -> tuple[TaskVersion, dict[str, bytes]]:
    """Validate a task file and everything it names; returns the task (version 0: not recorded) and
    the files its version covers, by their name in a snapshot. Raises ``DatasetError`` with the fix."""
    path = Path(path).resolve()
    spec, files = task_files(path)
    task_dir = path.parent
    data_path = task_dir / spec.data.path
    scoring = TaskScoring(spec.scoring, task_dir, str(path))
    prompt = PromptTemplate(spec.prompt, set(spec.data.fields), str(path))
    data_bytes = files[_data_file(data_path)]
    items = _items(spec, read_items(spec, data_path, data_bytes))
    # Every item's prompt renders, so a template error surfaces now, not mid-benchmark.
    with progress.tracked(spec.name, len(items), "checked") as on_item:
        for done, item in enumerate(items, start=1):
            prompt.messages(item.data, where=f"item {item.id}")
            on_item(done, len(items))
    live = _live_scoring(spec, task_dir, str(path))  # a module that cannot be imported is refused here, data first
    task = TaskVersion(
        name=spec.name, version=0, sha256=_digest(files), data_sha256=hashlib.sha256(data_bytes).hexdigest(),
        spec=spec, items=items, prompt=prompt, scoring=scoring, directory=task_dir, data_path=data_path,
        source=str(path), added="", live=live,
    )
    return task, files


def task_files(path: Path) -> tuple[TaskSpec, dict[str, bytes]]:
    """The spec and the files a task's version covers (spec, data, scorer modules beside it), by
    their name in a snapshot; cheap enough to tell whether a task file changed without validating."""
    spec, spec_bytes = read_spec(path)
    task_dir = path.parent
    data_path = task_dir / spec.data.path
    if not data_path.is_file():
        raise DatasetError(f"{path}: data.path {spec.data.path!r} names no file ({data_path}); fix the path")
    files = {SPEC_FILE: spec_bytes, _data_file(data_path): data_path.read_bytes()}
    for scorer in (*spec.scoring.scorers, *(spec.live.scorers if spec.live else ())):
        local = scorer_file(scorer, task_dir) if isinstance(scorer, PythonScorer) else None
        if local is not None:
            files[local.relative_to(task_dir).as_posix()] = local.read_bytes()
    return spec, files


def _live_scoring(spec: TaskSpec, task_dir: Path, source: str) -> TaskScoring | None:
    """The live scorers as a ``TaskScoring``: live calls are scored by the same engine as benchmarks."""
    scoring = spec.live.scoring if spec.live is not None else None
    return TaskScoring(scoring, task_dir, source) if scoring is not None else None


def _data_file(data_path: Path) -> str:
    """The data's name in a snapshot: ``data`` with the format's suffix."""
    return f"data{data_path.suffix.lower()}"


def _items(spec: TaskSpec, rows: list[dict[str, Any]]) -> tuple[Item, ...]:
    return tuple(Item(id=str(row[spec.data.id]), task=spec.name, data=row) for row in rows)


def _digest(files: dict[str, bytes]) -> str:
    """sha256 over each file's name and bytes, in name order: the same content is the same version."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return digest.hexdigest()


class TaskCatalog:
    """The recorded tasks of one ``ARBITER_HOME``; the one owner of ``tasks/``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.home / "tasks"
        self._checked: dict[Path, tuple[tuple[str, int, int], ...]] = {}  # datasets-folder files seen unchanged, by their stat

    # ------------------------------------------------------------------ writing

    def add(self, path: Path, *, new_version: bool = False) -> tuple[TaskVersion, bool]:
        """Validate and record a task file; returns the version and whether it is new. The same content
        again returns the existing version; a name taken by different content needs ``new_version``."""
        task, files = compile_task(path)
        same = self._same_or_refused(task, new_version)
        return (same, False) if same is not None else (self._record(task, files), True)

    def _same_or_refused(self, task: TaskVersion, new_version: bool) -> TaskVersion | None:
        """The recorded version with this content, if any; a different one under this name is refused
        unless a new version is asked for."""
        existing = self._versions(task.name)
        for version in existing:
            if version["sha256"] == task.sha256:
                return self._load(task.name, version["version"])
        if existing and not new_version:
            latest = existing[-1]
            raise DatasetError(
                f"task {task.name!r} already exists as version {latest['version']} (sha256 {latest['sha256'][:12]}, "
                f"from {latest['source']}) with different content; add with --new-version to record this as "
                f"version {latest['version'] + 1} (runs of earlier versions keep theirs), or rename the task"
            )
        return None

    def add_frame(self, frame: pd.DataFrame, spec: dict[str, Any], *, new_version: bool = False) -> tuple[TaskVersion, bool]:
        """A task from a pandas DataFrame and a spec given as a dict (``data.path`` may be left out): both
        are written as a task folder under ``ARBITER_HOME/task-files/<name>/`` (the spec as YAML, the rows
        as JSONL) and added like any task file, so the notebook path and the file path are one path. The
        folder is written aside and checked first: a refused frame leaves the last good folder as it was."""
        name = spec.get("name")
        if not isinstance(name, str) or not NAME_PATTERN.match(name):
            raise DatasetError(f"spec name {name!r} is not a task name; use a lowercase slug such as 'support'")
        data = dict(spec.get("data") or {})
        data["path"] = data.get("path") or f"{name}.jsonl"
        if Path(data["path"]).suffix.lower() != ".jsonl" or Path(data["path"]).name != data["path"]:
            raise DatasetError("add_frame writes the rows as JSON Lines beside the spec: leave data.path out or give "
                               "a file name ending in .jsonl")
        parent = self.settings.home / "task-files"
        staging = parent / f".staging-{uuid.uuid4().hex}"
        staging.mkdir(parents=True)
        try:
            (staging / data["path"]).write_text(frame.to_json(orient="records", lines=True, force_ascii=False))
            (staging / f"{name}.yaml").write_text(yaml.safe_dump({**spec, "data": data}, sort_keys=False, allow_unicode=True))
            task, files = compile_task(staging / f"{name}.yaml")
            same = self._same_or_refused(task, new_version)
            if same is not None:
                return same, False
            folder = parent / name
            shutil.rmtree(folder, ignore_errors=True)
            os.rename(staging, folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        # Recorded as coming from the folder it now lies in (the bytes, so the version, are the same).
        moved = dataclasses.replace(task, directory=folder, data_path=folder / data["path"],
                                    source=str((folder / f"{name}.yaml").resolve()))
        return self._record(moved, files), True

    def _record(self, task: TaskVersion, files: dict[str, bytes]) -> TaskVersion:
        """Write the snapshot under a temporary name, then rename it into place: a reader never sees
        half a version, and two writers racing for one number both end with a whole version each."""
        folder = self.root / task.name
        folder.mkdir(parents=True, exist_ok=True)
        while True:
            versions = self._versions(task.name)
            same = next((v for v in versions if v["sha256"] == task.sha256), None)
            if same is not None:
                return self._load(task.name, same["version"])
            number = versions[-1]["version"] + 1 if versions else 1
            staging = folder / f".staging-{uuid.uuid4().hex}"
            staging.mkdir()
            try:
                for name, content in files.items():
                    (staging / name).parent.mkdir(parents=True, exist_ok=True)
                    (staging / name).write_bytes(content)
                record = {
                    "name": task.name, "version": number, "sha256": task.sha256, "data_sha256": task.data_sha256,
                    "data_file": _data_file(task.data_path), "source": task.source,
                    "added": datetime.now(UTC).isoformat(timespec="seconds"), "n_items": len(task.items),
                }
                (staging / VERSION_FILE).write_text(json.dumps(record, indent=2))
                os.rename(staging, folder / str(number))
                snapshot = folder / str(number)
            except OSError:
                shutil.rmtree(staging, ignore_errors=True)
                if (folder / str(number)).exists():
                    continue  # another process took this number first: look again
                raise
            # The compiled task as recorded, rather than the snapshot read back: its items are the same.
            return dataclasses.replace(task, version=number, directory=snapshot, data_path=snapshot / record["data_file"],
                                       added=record["added"])

    # ------------------------------------------------------------------ reading

    def get(self, ref: str) -> TaskVersion:
        """``NAME`` (its latest version) or ``NAME/VERSION``; a task file in the datasets folder is
        recorded first if it is new or changed. Raises ``NotFoundError`` listing the known tasks."""
        name, _, number = ref.partition("/")
        self._track(name)
        versions = self._versions(name)
        if not versions:
            raise NotFoundError(f"unknown task {name!r}; known tasks: {', '.join(self.names()) or 'none'} "
                                "(add yours with `arbiter tasks add PATH`)")
        if not number:
            return self._load(name, versions[-1]["version"])
        if not number.isdigit() or int(number) not in {v["version"] for v in versions}:
            known = ", ".join(str(v["version"]) for v in versions)
            raise NotFoundError(f"task {name!r} has no version {number!r}; its versions: {known}")
        return self._load(name, int(number))

    def find(self, name: str) -> TaskVersion | None:
        """The latest version of task ``name``, or None when there is no such task: how a route asks
        whether it is a task (one directory read and the cached snapshot; no other task is read)."""
        self._track(name)
        versions = self._versions(name)
        return self._load(name, versions[-1]["version"]) if versions else None

    def names(self) -> list[str]:
        """Every task name: recorded ones and those in the datasets folder."""
        recorded = {p.name for p in self.root.iterdir() if p.is_dir() and self._versions(p.name)} if self.root.is_dir() else set()
        return sorted(recorded | set(self._folder_files()))

    def latest(self) -> list[TaskVersion]:
        """The latest version of every task (datasets-folder files tracked first)."""
        return [self.get(name) for name in self.names()]

    def criteria_for(self, criteria: Criteria) -> Criteria:
        """``criteria`` with the capabilities its task needs added, when the task is known: a version
        that cannot do the task is excluded, with that reason, wherever a version is selected. A
        classification task adds none: a classifier serves it without them, and :meth:`contract`
        (passed to the selector) holds a text model to them."""
        task = self.find(criteria.task)
        if task is None or task.classification is not None:
            return criteria
        needed = task.spec.capabilities
        if set(needed) <= set(criteria.capabilities):
            return criteria
        return criteria.model_copy(update={"capabilities": tuple(dict.fromkeys((*criteria.capabilities, *needed)))})

    def contract(self, name: str) -> TaskContract | None:
        """The contract of task ``name`` (a route's task), or None for a route that is no task: what
        the selector, ``Routes.promote`` and the rollout hold a version to."""
        task = self.find(name)
        return task.contract if task is not None else None

    def default_names(self) -> list[str]:
        """What a benchmark runs when no task is named: every task that needs no judge (a judged one
        costs a judge model and minutes per item, so it runs when asked for)."""
        return [task.name for task in self.latest() if not task.needs_judge]

    def versions(self, name: str) -> list[dict[str, Any]]:
        """Each recorded version's ``version.json``, oldest first."""
        self._track(name)
        return self._versions(name)

    def _versions(self, name: str) -> list[dict[str, Any]]:
        folder = self.root / name
        if not folder.is_dir():
            return []
        found = []
        for entry in folder.iterdir():
            if entry.name.isdigit() and (entry / VERSION_FILE).is_file():
                found.append(json.loads((entry / VERSION_FILE).read_text()))
        return sorted(found, key=lambda v: v["version"])

    def _load(self, name: str, version: int) -> TaskVersion:
        return _load_snapshot(self.root / name / str(version))

    # ------------------------------------------------------------------ the datasets folder

    def _folder_files(self) -> dict[str, Path]:
        """Task files in the datasets folder, by the file's stem (which must be the task's name)."""
        folder = self.settings.datasets_dir
        if not folder.is_dir():
            return {}
        return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix in TASK_FILE_SUFFIXES and p.is_file()}

    def _track(self, name: str) -> None:
        """Record the datasets folder's ``NAME.yaml`` if the name has no version yet, or if its latest
        version came from that file and the file has changed since."""
        path = self._folder_files().get(name)
        if path is None:
            return
        stamp = _stamp(path)
        if self._checked.get(path) == stamp:
            return
        versions = self._versions(name)
        if versions and Path(versions[-1]["source"]).parent not in self._datasets_folders():
            return  # the name's latest version was added by hand: that one stands
        spec, files = task_files(path.resolve())
        if spec.name != name:
            raise DatasetError(f"{path} declares name {spec.name!r}; a task file in the datasets folder must be "
                               f"named after its task ({spec.name}.yaml)")
        if not versions or versions[-1]["sha256"] != _digest(files):
            self._record(*compile_task(path))
        self._checked[path] = stamp


    def _datasets_folders(self) -> set[Path]:
        """Both folders a tracked task file comes from: the repo's shipped one and the home's own. A
        version recorded from either is tracked, so a home that gains its own ``datasets/`` after a
        shipped task was recorded follows the home's file rather than keeping the shipped one."""
        home_folder = self.settings.home / "datasets"
        return {SHIPPED_DATASETS.resolve(), home_folder.resolve()}


def _stamp(task_file: Path) -> tuple[tuple[str, int, int], ...]:
    """Every file beside the task file, with its modification time and size: a cheap "has anything
    it may read changed" (the datasets folder holds a few files)."""
    return tuple(sorted((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in task_file.parent.iterdir() if p.is_file()))


@functools.lru_cache(maxsize=64)
def _load_snapshot(directory: Path) -> TaskVersion:
    """A recorded version, compiled; cached per process, since a snapshot never changes. Its data was
    validated when it was added, so only its sha256 is checked here."""
    record = json.loads((directory / VERSION_FILE).read_text())
    spec, _ = read_spec(directory / SPEC_FILE)
    data_path = directory / record["data_file"]
    raw = data_path.read_bytes()
    if hashlib.sha256(raw).hexdigest() != record["data_sha256"]:
        raise DatasetError(f"{data_path} changed after it was recorded (sha256 mismatch); add the task again "
                           "with `arbiter tasks add PATH --new-version` rather than editing a recorded version")
    parsed = parse_rows(data_path, raw, spec.data.fields)
    declared = tuple(spec.data.fields)
    rows = [{k: row.get(k) for k in declared} for row in parsed.rows.values()]
    return TaskVersion(
        name=record["name"], version=record["version"], sha256=record["sha256"], data_sha256=record["data_sha256"],
        spec=spec, items=_items(spec, rows), prompt=PromptTemplate(spec.prompt, set(declared), str(directory / SPEC_FILE)),
        scoring=TaskScoring(spec.scoring, directory, str(directory / SPEC_FILE)), directory=directory,
        data_path=data_path, source=record["source"], added=record["added"],
        live=_live_scoring(spec, directory, str(directory / SPEC_FILE)),
    )
