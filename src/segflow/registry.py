"""A file-based model registry: one folder per model, an index naming the champion.

The index is rewritten atomically under an exclusive lock, so concurrent registers never
lose an entry and a reader never sees half an index.
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from segflow.io import file_hash, read_json, write_json, write_text

CHAMPION = "champion"


class RegistryError(LookupError):
    """A model reference that the registry cannot resolve."""


class Registry:
    def __init__(self, root: Path):
        self.root = Path(root)

    @property
    def index_path(self) -> Path:
        return self.root / "index.json"

    def model_dir(self, model_id: str) -> Path:
        return self.root / "models" / model_id

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def index(self) -> dict:
        if not self.index_path.is_file():
            return {"champion": None, "models": {}}
        return read_json(self.index_path)

    def add(self, model_file: Path, entry: dict, files: dict[str, str], promote: bool) -> str:
        """Copy the model and its records into a new entry; make it champion if `promote`."""
        digest = file_hash(model_file)
        model_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{digest[:8]}-{uuid.uuid4().hex[:6]}"
        folder = self.model_dir(model_id)
        staging = folder.with_name(f".{model_id}.partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        shutil.copy2(model_file, staging / "model.pt")
        for name, text in files.items():
            write_text(staging / name, text)
        entry = {**entry, "id": model_id, "sha256": digest,
                 "status": CHAMPION if promote else "candidate"}
        write_json(staging / "entry.json", entry)
        staging.rename(folder)
        with self._locked():
            index = self.index()
            index["models"][model_id] = {k: entry[k] for k in ("created", "status", "metrics", "git_commit")}
            if promote:
                if index["champion"] in index["models"]:
                    index["models"][index["champion"]]["status"] = "retired"
                index["champion"] = model_id
            write_json(self.index_path, index)
        return model_id

    def resolve(self, reference: str) -> Path:
        """'champion', a model id, or a path to a model file -> the model file."""
        if reference == CHAMPION:
            champion = self.index().get("champion")
            if not champion:
                raise RegistryError(f"{self.index_path}: no champion model is registered yet (run the pipeline)")
            reference = champion
        candidate = self.model_dir(reference) / "model.pt"
        if candidate.is_file():
            return candidate
        path = Path(reference)
        if path.is_file():
            return path
        raise RegistryError(f"{reference!r} is neither a registered model id in {self.root} nor a model file")
