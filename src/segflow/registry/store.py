"""A file-based model registry: one folder per model, an index naming the champion.

    registry/
      index.json            {"champion": id, "champions": [ids, oldest first], "models": {id: summary}}
      models/<id>/          model.pt, entry.json, params.yaml, per_case.csv, MODEL_CARD.md, bundle/ ...

Every change to the index happens under an exclusive lock and is written in one rename, so
concurrent registers never lose an entry and a reader never sees half an index. A new model's
folder is complete before the index names it. `champions` is the stack `rollback` pops.

The entries are the record and the index summarises them: each entry.json holds its model's
status and the events that set it. A change refuses to run while the index disagrees with the
folders (it would crown a model without comparison, or lose one); `repair` rebuilds the index from
the entries. Staging folders carry their owner (`<pid>@<host>`), so a later run removes the ones a
killed run left behind and never one still in use.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from segflow.files import file_hash, owner_tag, remove_abandoned, write_json, write_text

CHAMPION = "champion"
CANDIDATE = "candidate"
RETIRED = "retired"
ROLLED_BACK = "rolled-back"
STATUSES = (CHAMPION, CANDIDATE, RETIRED, ROLLED_BACK)
SUMMARY_KEYS = ("created", "status", "metrics", "git_commit", "git_modified", "network", "dataset", "task", "reason")
REPAIR = "run `segflow models repair`"
NEVER = datetime.min.replace(tzinfo=timezone.utc)


class RegistryError(LookupError):
    """A model reference that the registry cannot resolve, or a change it cannot make."""


class BrokenRegistry(RegistryError):
    """index.json is unreadable or disagrees with the model folders; `segflow models repair` fixes it."""


# Called under the registry lock with the current champion's entry (None when there is none);
# returns (promote, reason).
Decide = Callable[[dict | None], tuple[bool, str]]


@dataclass
class Survey:
    """The registry as found on disk: the index (None when absent or unusable) and every model folder."""

    index: dict | None
    index_error: str | None
    entries: dict[str, dict]  # folder name -> its entry.json
    unreadable: dict[str, str]  # folder name -> why its entry.json cannot be used


@dataclass
class RepairReport:
    """What `repair` found and what the rebuilt index holds."""

    index_path: Path
    entries: int
    champion: str | None
    why: str
    champions: list[str]
    found: list[str] = field(default_factory=list)
    left_out: dict[str, str] = field(default_factory=dict)
    changes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        lines = [f"rebuilt {self.index_path} from {self.entries} entr{'y' if self.entries == 1 else 'ies'}"]
        lines += [f"  found: {problem}" for problem in self.found] or ["  found: the index agreed with the entries"]
        lines += [f"  champion: {self.champion or 'none'} ({self.why})",
                  f"  champions (rollback order, oldest first): {', '.join(self.champions) or 'none'}"]
        lines += [f"  left out: {why}" for why in self.left_out.values()]
        return lines + [f"  also: {change}" for change in self.changes]


class Registry:
    def __init__(self, root: Path):
        self.root = Path(root)

    @property
    def index_path(self) -> Path:
        return self.root / "index.json"

    @property
    def models_dir(self) -> Path:
        return self.root / "models"

    def model_dir(self, model_id: str) -> Path:
        return self.models_dir / model_id

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """The registry's exclusive lock (every change to index.json or the entries holds it)."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict]:
        """The index, locked for a read-modify-write and checked against the folders; written back
        (atomically) on success."""
        with self._lock():
            index = self._checked_index()
            yield index
            write_json(self.index_path, index)

    def index(self) -> dict:
        """index.json checked for shape (an empty index when there is none)."""
        return read_index(self.index_path) or empty_index()

    def survey(self) -> Survey:
        """Read the index and every model folder's entry.json, keeping what cannot be read apart."""
        try:
            index, error = read_index(self.index_path), None
        except RegistryError as exc:
            index, error = None, str(exc)
        entries, unreadable = {}, {}
        for model_id in self._folder_ids():
            try:
                entries[model_id] = read_entry(self.model_dir(model_id) / "entry.json")
            except RegistryError as exc:
                unreadable[model_id] = str(exc)
        return Survey(index, error, entries, unreadable)

    def _folder_ids(self) -> list[str]:
        """Names of the model folders (hidden staging folders excluded)."""
        if not self.models_dir.is_dir():
            return []
        return sorted(p.name for p in self.models_dir.iterdir() if p.is_dir() and not p.name.startswith("."))

    def problems(self, survey: Survey | None = None) -> list[str]:
        """How index.json disagrees with the model folders (empty when it agrees)."""
        survey = survey or self.survey()
        if survey.index_error:
            return [survey.index_error]
        if survey.index is None:
            found = len(survey.entries)
            return [f"{self.index_path} is missing but {self.models_dir} holds {found} model entr"
                    f"{'y' if found == 1 else 'ies'}"] if found else []
        listed, champion = survey.index["models"], survey.index["champion"]
        problems = []
        if champion and champion not in listed:
            problems.append(f"{self.index_path} names champion {champion} but does not list it")
        for model_id, listed_as in listed.items():
            problems += self._listed_problems(survey, model_id, listed_as.get("status"), champion)
        return problems + [f"{self.model_dir(m)} is not listed in {self.index_path}"
                           for m in survey.entries if m not in listed]

    def _listed_problems(self, survey: Survey, model_id: str, status, champion: str | None) -> list[str]:
        """What is wrong with one model the index lists: no folder, no usable entry, another status."""
        if model_id in survey.unreadable:
            return [survey.unreadable[model_id]]
        if model_id not in survey.entries:
            return [self._missing_folder(model_id, champion)]
        entry, path = survey.entries[model_id], self.model_dir(model_id) / "entry.json"
        problems = [] if entry.get("id") == model_id else [f"{path} names id {entry.get('id')!r}, not {model_id}"]
        if entry["status"] != status:
            problems.append(f"{self.index_path} says {model_id} is {status} but {path} says {entry['status']}")
        return problems

    def _missing_folder(self, model_id: str, champion: str | None) -> str:
        who = f"champion {model_id} is named" if model_id == champion else f"{model_id} is listed"
        return f"{who} in {self.index_path} but its folder {self.model_dir(model_id)} is missing"

    def check(self) -> None:
        """Raise BrokenRegistry, naming every disagreement, unless index.json agrees with the folders."""
        self._checked_index()

    def _checked_index(self) -> dict:
        survey = self.survey()
        if survey.index_error:
            raise BrokenRegistry(survey.index_error)
        problems = self.problems(survey)
        if problems:
            shown = "; ".join(problems[:3]) + (f"; and {len(problems) - 3} more" if len(problems) > 3 else "")
            raise BrokenRegistry(f"the registry's index disagrees with its model folders: {shown}. Nothing was "
                                 f"changed; {REPAIR} to rebuild {self.index_path} from the entries")
        return survey.index or empty_index()

    def entry(self, model_id: str) -> dict:
        """The entry.json of a registered model (`champion` names the current champion)."""
        model_id = self.model_id(model_id)
        return read_entry(self.model_dir(model_id) / "entry.json")

    def model_id(self, reference: str) -> str:
        """A registered id from 'champion', an id, or an unambiguous id prefix; an index that is
        unusable or names a folder that is gone is reported as such (BrokenRegistry)."""
        index = read_index(self.index_path)
        if index is None and self._folder_ids():
            raise BrokenRegistry(f"{self.index_path} is missing but {self.models_dir} holds model folders; "
                                 f"{REPAIR} to rebuild it from their entries")
        index = index or empty_index()
        model_id = self._champion_id(index) if reference == CHAMPION else self._listed_id(index, reference)
        if not self.model_dir(model_id).is_dir():
            raise BrokenRegistry(f"{self._missing_folder(model_id, index['champion'])}; {REPAIR}")
        return model_id

    def _champion_id(self, index: dict) -> str:
        if not index["champion"]:
            raise RegistryError(f"{self.index_path}: no champion model is registered yet (run the pipeline)")
        return index["champion"]

    def _listed_id(self, index: dict, reference: str) -> str:
        """The listed id that `reference` is, or the one it is a prefix of."""
        if reference in index["models"]:
            return reference
        matches = [m for m in index["models"] if m.startswith(reference)] if reference else []
        if len(matches) == 1:
            return matches[0]
        if not matches and _plain_name(reference) and self.model_dir(reference).is_dir():
            raise BrokenRegistry(f"{self.model_dir(reference)} exists but {self.index_path} does not list it; {REPAIR}")
        known = ", ".join(sorted(index["models"])[-5:]) or "none"
        what = "matches several models" if matches else "is not a registered model id"
        raise RegistryError(f"{reference!r} {what} in {self.root} (latest: {known}; see `segflow models list`)")

    def add(self, model_file: Path, entry: dict, files: dict[str, str], decide: Decide,
            folders: dict[str, Path] | None = None) -> tuple[str, bool, str]:
        """Copy the model, its records and `folders` into a new entry; `decide` (called under
        the lock with the champion's entry) says whether it becomes champion. Returns
        (model id, promoted, reason)."""
        digest = file_hash(model_file)
        model_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{digest[:8]}-{uuid.uuid4().hex[:6]}"
        with self._lock():
            remove_abandoned(self.models_dir, ".*.partial*")
        staging = self.models_dir / f".{model_id}.partial-{owner_tag()}"
        staging.mkdir(parents=True)
        try:
            shutil.copy2(model_file, staging / "model.pt")
            for name, text in files.items():
                write_text(staging / name, text)
            for name, folder in (folders or {}).items():
                shutil.copytree(folder, staging / name)
            with self._locked() as index:
                promote, reason = self._admit(index, staging, {**entry, "id": model_id, "sha256": digest}, decide)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return model_id, promote, reason

    def _admit(self, index: dict, staging: Path, entry: dict, decide: Decide) -> tuple[bool, str]:
        """Under the lock: decide, write entry.json (with its first event), move the folder in, index it."""
        champion = index["champion"] and read_entry(self.model_dir(index["champion"]) / "entry.json")
        promote, reason = decide(champion or None)
        status, model_id = CHAMPION if promote else CANDIDATE, entry["id"]
        entry = {**entry, "status": status, "reason": reason, "events": [_event(status, reason)]}
        write_json(staging / "entry.json", entry)
        staging.rename(self.model_dir(model_id))
        index["models"][model_id] = summary(entry)
        if promote:
            self._crown(index, model_id, RETIRED, f"replaced by {model_id}")
            index["champions"].append(model_id)
        return promote, reason

    def _crown(self, index: dict, model_id: str, old_status: str, reason: str) -> None:
        """Make `model_id` champion in `index`; the old champion gets `old_status`."""
        old = index.get("champion")
        if old in index["models"] and old != model_id:
            self._set_status(index, old, old_status, reason)
        index["champion"] = model_id

    def _set_status(self, index: dict, model_id: str, status: str, reason: str | None = None) -> None:
        index["models"][model_id]["status"] = status
        self._write_status(model_id, status, reason)

    def _write_status(self, model_id: str, status: str, reason: str | None) -> dict:
        """Set a model's status in its entry.json and record the event; returns the entry."""
        path = self.model_dir(model_id) / "entry.json"
        entry = read_entry(path)
        entry["status"] = status
        entry.setdefault("events", []).append(_event(status, reason))
        write_json(path, entry)
        return entry

    def promote(self, reference: str, reason: str) -> str:
        """Make a registered model champion by hand (the registry records who said why)."""
        model_id = self.model_id(reference)
        with self._locked() as index:
            if index.get("champion") == model_id:
                raise RegistryError(f"{model_id} is already the champion")
            self._crown(index, model_id, RETIRED, f"replaced by {model_id} by hand: {reason}")
            index["champions"].append(model_id)
            self._set_status(index, model_id, CHAMPION, reason)
        return model_id

    def rollback(self, reason: str) -> tuple[str, str]:
        """Give the title back to the champion before the current one; returns (from, to)."""
        with self._locked() as index:
            current = index.get("champion")
            earlier = [m for m in index["champions"][:-1] if m in index["models"] and m != current]
            if not current or not earlier:
                raise RegistryError(f"{self.index_path}: no earlier champion to roll back to")
            index["champions"] = index["champions"][: index["champions"].index(earlier[-1]) + 1]
            self._crown(index, earlier[-1], ROLLED_BACK, reason)
            self._set_status(index, earlier[-1], CHAMPION, f"rollback from {current}: {reason}")
        return current, earlier[-1]

    def repair(self) -> RepairReport:
        """Rebuild index.json from the entries, under the lock: one champion (chosen by the events
        when the entries name several or none), the rollback stack from the events history.
        Unreadable entries are left out and reported; an unreadable index is kept beside it."""
        with self._lock():
            removed = remove_abandoned(self.models_dir, ".*.partial*")
            survey = self.survey()
            found = self.problems(survey)
            champion, why = choose_champion(survey.entries)
            changes = self._settle_entries(survey.entries, champion, why)
            changes += [f"removed abandoned staging folder {p}" for p in removed] + self._set_aside_index(survey)
            champions = champion_stack(survey.entries, champion)
            models = {m: summary(e) for m, e in sorted(survey.entries.items())}
            write_json(self.index_path, {"champion": champion, "champions": champions, "models": models})
        return RepairReport(self.index_path, len(models), champion, why, champions, found, survey.unreadable,
                            changes)

    def _settle_entries(self, entries: dict[str, dict], champion: str | None, why: str) -> list[str]:
        """Write into the entries what the repaired index will say: their own id, one champion."""
        changes = []
        for model_id, entry in entries.items():
            status = CHAMPION if model_id == champion else RETIRED if entry["status"] == CHAMPION else None
            if entry.get("id") != model_id:
                changes.append(f"set id {model_id} (was {entry.get('id')!r}) in {self.model_dir(model_id)}")
                write_json(self.model_dir(model_id) / "entry.json", {**entry, "id": model_id})
            if status and status != entry["status"]:
                entries[model_id] = self._write_status(model_id, status, f"registry repair: {why}")
                changes.append(f"set {model_id} {status} (was {entry['status']})")
        return changes

    def _set_aside_index(self, survey: Survey) -> list[str]:
        """Keep an unreadable index.json (renamed) rather than overwrite what someone may want to read."""
        if not survey.index_error or not self.index_path.exists():
            return []
        kept = self.index_path.with_name(f"index.json.unreadable-{time.strftime('%Y%m%d-%H%M%S')}")
        self.index_path.rename(kept)
        return [f"kept the unreadable index as {kept}"]

    def models(self) -> list[dict]:
        """Index summaries with their ids, oldest first."""
        return [{"id": model_id, **summary} for model_id, summary in sorted(self.index()["models"].items())]

    def resolve(self, reference: str) -> Path:
        """'champion', a model id (or id prefix), or a path to a model file -> the model file. An
        existing file wins over an id prefix; a file named exactly like a registered model
        ('champion' while there is one, or a full id) is ambiguous and refused."""
        path = Path(reference).expanduser()
        if path.is_file():
            self._refuse_file_named_like_a_model(reference)
            return path
        try:
            model_id = self.model_id(reference)
        except BrokenRegistry:
            raise
        except RegistryError as exc:
            if reference == CHAMPION:
                raise
            raise RegistryError(f"{reference!r} is not a model file, and {exc}") from None
        model = self.model_dir(model_id) / "model.pt"
        if not model.is_file():
            raise RegistryError(f"{model}: missing, so registry model {model_id} cannot be used")
        return model

    def _refuse_file_named_like_a_model(self, reference: str) -> None:
        try:
            index = self.index()
        except RegistryError:  # an unusable registry does not stop the use of a file
            return
        if reference in index["models"] or (reference == CHAMPION and index.get("champion")):
            raise RegistryError(f"{reference!r} is both a file here and a registered model in {self.root}; "
                                f"write ./{reference} for the file")


def empty_index() -> dict:
    return {"champion": None, "champions": [], "models": {}}


def summary(entry: dict) -> dict:
    """What index.json keeps of an entry."""
    return {k: entry.get(k) for k in SUMMARY_KEYS}


def read_index(path: Path) -> dict | None:
    """index.json checked for shape (None when there is none): every problem names the file."""
    if not path.exists():
        return None
    index = _load_json(path, f"{REPAIR} to rebuild it from the model folders")
    problem = _index_problem(index)
    if problem:
        raise BrokenRegistry(f"{path}: {problem}; {REPAIR} to rebuild it from the model folders")
    if "champions" not in index:  # an index written before rollback existed
        index["champions"] = [index["champion"]] if index.get("champion") else []
    index.setdefault("champion", None)
    return index


def _index_problem(index) -> str | None:
    """What is wrong with the shape of an index (None when nothing is)."""
    if not isinstance(index, dict):
        return f"holds {_kind(index)}, not a JSON object"
    if "models" not in index:
        return 'has no "models" object'
    if not isinstance(index["models"], dict):
        return f'"models" is {_kind(index.get("models"))}, not an object of id: summary'
    for model_id, value in index["models"].items():
        if not _plain_name(model_id):
            return f'"models" has the id {model_id!r}, which is not a plain folder name'
        if not isinstance(value, dict):
            return f'"models" holds {_kind(value)} for {model_id}, not an object'
    champion = index.get("champion")
    if champion is not None and not _plain_name(champion):
        return f'"champion" is {champion!r}, not a model id or null'
    champions = index.get("champions", [])
    if not isinstance(champions, list) or not all(_plain_name(m) for m in champions):
        return f'"champions" is {json.dumps(champions)[:80]}, not a list of model ids'
    return None


def read_entry(path: Path) -> dict:
    """A model's entry.json checked for what the registry relies on: an object with a known status."""
    hint = f"fix it, or move its folder out of {path.parents[1]} and {REPAIR}"
    entry = _load_json(path, hint)
    problem = _entry_problem(entry)
    if problem:
        raise RegistryError(f"{path}: {problem}; {hint}")
    return entry


def _entry_problem(entry) -> str | None:
    if not isinstance(entry, dict):
        return f"holds {_kind(entry)}, not a JSON object"
    if entry.get("status") not in STATUSES:
        return f'"status" is {entry.get("status")!r}, not one of {", ".join(STATUSES)}'
    events = entry.get("events", [])
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        return '"events" is not a list of objects'
    if not isinstance(entry.get("metrics", {}), dict):
        return f'"metrics" is {_kind(entry.get("metrics"))}, not an object'
    return None


def _load_json(path: Path, hint: str):
    """A JSON file's content; a missing, unreadable or invalid file raises BrokenRegistry naming it."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise BrokenRegistry(f"{path}: missing; {hint}") from None
    except OSError as exc:
        raise BrokenRegistry(f"{path}: cannot be read ({exc.strerror or exc}); {hint}") from None
    except ValueError as exc:  # JSON and UTF-8 errors are ValueErrors
        raise BrokenRegistry(f"{path}: not valid JSON ({str(exc)[:120]}); {hint}") from None
    except RecursionError:
        raise BrokenRegistry(f"{path}: nested too deeply to be read as JSON; {hint}") from None


def _kind(value) -> str:
    """JSON's name for a value's type, for messages."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def _plain_name(value) -> bool:
    """A model id must be usable as one folder name under models/ (no path, not hidden)."""
    return isinstance(value, str) and bool(value) and not value.startswith(".") and not set(value) & {"/", "\\", "\0"}


def crowned_at(entry: dict) -> list[datetime]:
    """When a model became champion: its champion events, plus its creation when it arrived as
    champion before add recorded that as an event (its first event then retires it)."""
    events = entry.get("events") or []
    moments = [_when(e.get("at")) for e in events if e.get("status") == CHAMPION]
    arrived_crowned = events[0].get("status") in (RETIRED, ROLLED_BACK) if events else entry["status"] == CHAMPION
    return moments + ([_when(entry.get("created"))] if arrived_crowned else [])


def choose_champion(entries: dict[str, dict]) -> tuple[str | None, str]:
    """The champion the entries name, with why. Several say champion, or none does (its folder was
    deleted): the one crowned most recently (rolled-back models excluded)."""
    claiming = sorted(m for m, e in entries.items() if e["status"] == CHAMPION)
    if len(claiming) == 1:
        return claiming[0], "its entry says champion"
    pool = claiming or [m for m, e in entries.items() if e["status"] != ROLLED_BACK and crowned_at(e)]
    if not pool:
        return None, "no entry says champion and none ever was"
    latest = max(pool, key=lambda m: (max(crowned_at(entries[m]), default=NEVER), m))
    said = f"{len(claiming)} entries say champion ({', '.join(claiming)})" if claiming else "no entry says champion"
    return latest, f"{said}; chose {latest}, champion most recently by the events"


def champion_stack(entries: dict[str, dict], champion: str | None) -> list[str]:
    """`champions` from the events: every model ever crowned and not rolled back, by when it was
    last crowned, the champion last."""
    crowned = [m for m, e in entries.items() if m != champion and e["status"] != ROLLED_BACK and crowned_at(e)]
    crowned.sort(key=lambda m: (max(crowned_at(entries[m])), m))
    return crowned + ([champion] if champion else [])


def _event(status: str, reason: str | None) -> dict:
    return {"at": _now(), "status": status, "reason": reason}


def _now() -> str:
    """Local time to the microsecond, so events of one second still order (repair sorts by them)."""
    return datetime.now().astimezone().isoformat(timespec="microseconds")


def _when(text) -> datetime:
    """An event time (ISO 8601; without a zone: local) as a comparable datetime; NEVER when unusable."""
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return NEVER
    return moment if moment.tzinfo else moment.astimezone()
