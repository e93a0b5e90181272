"""A file-based model registry: one folder per model, an index naming the champion.

    registry/
      index.json            {"champion": id, "champions": [ids, oldest first], "models": {id: summary}}
      models/<id>/          model.pt, entry.json, params.yaml, per_case.csv, MODEL_CARD.md, bundle/ ...

Every change to the index happens under an exclusive lock and is written in one rename, so
concurrent registers never lose an entry and a reader never sees half an index. A new model's
folder is complete before the index names it. `champions` is the stack `rollback` pops.
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from segflow.io import file_hash, read_json, write_json, write_text

CHAMPION = "champion"
CANDIDATE = "candidate"
RETIRED = "retired"
ROLLED_BACK = "rolled-back"
SUMMARY_KEYS = ("created", "status", "metrics", "git_commit", "network", "dataset", "reason")


class RegistryError(LookupError):
    """A model reference that the registry cannot resolve, or a change it cannot make."""


# Called under the registry lock with the current champion's entry (None when there is none);
# returns (promote, reason).
Decide = Callable[[dict | None], tuple[bool, str]]


class Registry:
    def __init__(self, root: Path):
        self.root = Path(root)

    @property
    def index_path(self) -> Path:
        return self.root / "index.json"

    def model_dir(self, model_id: str) -> Path:
        return self.root / "models" / model_id

    @contextlib.contextmanager
    def _locked(self) -> Iterator[dict]:
        """The index, locked for a read-modify-write; written back (atomically) on success."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                index = self.index()
                yield index
                write_json(self.index_path, index)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def index(self) -> dict:
        if not self.index_path.is_file():
            return {"champion": None, "champions": [], "models": {}}
        index = read_json(self.index_path)
        if "champions" not in index:  # an index written before rollback existed
            index["champions"] = [index["champion"]] if index.get("champion") else []
        return index

    def entry(self, model_id: str) -> dict:
        """The entry.json of a registered model (`champion` names the current champion)."""
        model_id = self.model_id(model_id)
        return read_json(self.model_dir(model_id) / "entry.json")

    def model_id(self, reference: str) -> str:
        """A registered id from 'champion', an id, or an unambiguous id prefix."""
        index = self.index()
        if reference == CHAMPION:
            if not index.get("champion"):
                raise RegistryError(f"{self.index_path}: no champion model is registered yet (run the pipeline)")
            return index["champion"]
        if reference in index["models"]:
            return reference
        matches = [m for m in index["models"] if m.startswith(reference)] if reference else []
        if len(matches) == 1:
            return matches[0]
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
        staging = self.model_dir(model_id).with_name(f".{model_id}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        try:
            shutil.copy2(model_file, staging / "model.pt")
            for name, text in files.items():
                write_text(staging / name, text)
            for name, folder in (folders or {}).items():
                shutil.copytree(folder, staging / name)
            with self._locked() as index:
                champion = self.entry(index["champion"]) if index.get("champion") else None
                promote, reason = decide(champion)
                entry = {**entry, "id": model_id, "sha256": digest, "status": CHAMPION if promote else CANDIDATE,
                         "reason": reason}
                write_json(staging / "entry.json", entry)
                staging.rename(self.model_dir(model_id))
                index["models"][model_id] = {k: entry.get(k) for k in SUMMARY_KEYS}
                if promote:
                    self._crown(index, model_id, RETIRED, f"replaced by {model_id}")
                    index["champions"].append(model_id)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return model_id, promote, reason

    def _crown(self, index: dict, model_id: str, old_status: str, reason: str) -> None:
        """Make `model_id` champion in `index`; the old champion gets `old_status`."""
        old = index.get("champion")
        if old in index["models"] and old != model_id:
            self._set_status(index, old, old_status, reason)
        index["champion"] = model_id

    def _set_status(self, index: dict, model_id: str, status: str, reason: str | None = None) -> None:
        index["models"][model_id]["status"] = status
        path = self.model_dir(model_id) / "entry.json"
        if path.is_file():
            entry = read_json(path)
            entry["status"] = status
            entry.setdefault("events", []).append({"at": _now(), "status": status, "reason": reason})
            write_json(path, entry)

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

    def models(self) -> list[dict]:
        """Index summaries with their ids, oldest first."""
        return [{"id": model_id, **summary} for model_id, summary in sorted(self.index()["models"].items())]

    def resolve(self, reference: str) -> Path:
        """'champion', a model id, or a path to a model file -> the model file."""
        try:
            candidate = self.model_dir(self.model_id(reference)) / "model.pt"
        except RegistryError:
            if reference == CHAMPION:
                raise
            candidate = None
        if candidate is not None and candidate.is_file():
            return candidate
        path = Path(reference)
        if path.is_file():
            return path
        raise RegistryError(f"{reference!r} is neither a registered model id in {self.root} nor a model file")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
