"""One registry per dataset: `registry/<dataset key>/` holds that dataset's models and champion.

A 2D membranes model must never challenge a 3D hippocampus champion ("0 cases in common"), and
`predict --model champion` must pick the champion of the data it is given. So the registry folder
holds one Registry (segflow.registry.store) per dataset, keyed by the dataset's name and its task
(spatial dims, channels, classes): MLflow's registered models, each with its own versions and
champion alias, are the same idea. A registry from before (index.json at the top of the folder) is
read as one more dataset, named by its entries.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from segflow.registry.store import CHAMPION, BrokenRegistry, Registry, RegistryError

LEGACY = "."  # key of a registry kept at the top of the folder (made before per-dataset registries)


def dataset_key(name: str, task: dict) -> str:
    """`<name>-<8 hex of the task>`: one folder name per dataset and task."""
    digest = hashlib.sha256(json.dumps(task, sort_keys=True).encode()).hexdigest()[:8]
    return f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', name).strip('._') or 'dataset'}-{digest}"


def project_dataset(paths) -> tuple[str, dict]:
    """A project's dataset name (ingest's splits.json) and task (the plan's fingerprint.json)."""
    from segflow.data.splits import Splits
    from segflow.files import read_json
    from segflow.planning.fingerprint import task_from_fingerprint

    return Splits.load(paths.splits).dataset, task_from_fingerprint(read_json(paths.fingerprint))


def describe_task(task: dict | None) -> str:
    """'3D, 1 ch (MRI), 2 classes' for tables; '-' when unknown (entries from before tasks were kept)."""
    if not task:
        return "-"
    modality = ", ".join(str(v) for v in (task.get("modality") or {}).values())
    outputs = len(task.get("labels") or {}) - 1
    kind = ("region" if task.get("regions") else "class") + ("" if outputs == 1 else "s" if task.get("regions") else "es")
    return f"{task['spatial_dims']}D, {task['n_channels']} ch{f' ({modality})' if modality else ''}, {outputs} {kind}"


def task_matches(task: dict | None, spatial_dims: int | None, n_channels: int | None) -> bool:
    """Does an input with these dims and channels fit a model of `task`? Unknown facts match."""
    if not task:
        return True
    return ((spatial_dims is None or task.get("spatial_dims") == spatial_dims)
            and (n_channels is None or task.get("n_channels") == n_channels))


@dataclass(frozen=True)
class DatasetRegistry:
    key: str  # folder name under the registry folder, or LEGACY
    registry: Registry

    def champion_entry(self) -> dict | None:
        champion = self.registry.index()["champion"]
        return self.registry.index()["models"].get(champion) if champion else None

    def label(self) -> str:
        """How messages name the dataset: its key, or its entries' names for the legacy registry."""
        return self.key if self.key != LEGACY else self.name()

    def name(self) -> str:
        """The dataset's name (for the legacy registry: what its entries say)."""
        if self.key != LEGACY:
            return self.key.rsplit("-", 1)[0]
        names = {m.get("dataset") for m in self.registry.index()["models"].values()} - {None}
        return ", ".join(sorted(names)) or "(unnamed)"


class Catalog:
    """Every dataset's registry under one folder (register.registry_dir)."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def for_dataset(self, key: str) -> Registry:
        return Registry(self.root if key == LEGACY else self.root / key)

    def datasets(self) -> list[DatasetRegistry]:
        """The dataset registries found, the legacy one (if any) first."""
        found = [DatasetRegistry(LEGACY, Registry(self.root))] if _holds_registry(self.root) else []
        if self.root.is_dir():
            found += [DatasetRegistry(p.name, Registry(p)) for p in sorted(self.root.iterdir())
                      if p.is_dir() and p.name != "models" and not p.name.startswith(".") and _holds_registry(p)]
        return found

    def select(self, dataset: str) -> DatasetRegistry:
        """The dataset registry `dataset` names: its key, its name, or a key prefix."""
        known = self.datasets()
        exact = [d for d in known if dataset in (d.key, d.name())]
        matches = exact or [d for d in known if d.key.startswith(dataset)]
        if len(matches) == 1:
            return matches[0]
        listed = ", ".join(d.key for d in known) or "none yet"
        what = "matches several datasets" if matches else "names no dataset"
        raise RegistryError(f"--dataset {dataset!r} {what} in {self.root} (datasets: {listed})")

    def locate(self, reference: str) -> tuple[DatasetRegistry, str]:
        """The dataset registry holding model `reference` (an id or an id prefix) and its full id."""
        found, errors = [], []
        for dataset in self.datasets():
            try:
                found.append((dataset, dataset.registry.model_id(reference)))
            except BrokenRegistry:
                raise
            except RegistryError as exc:
                errors.append(str(exc))
        if len(found) == 1:
            return found[0]
        if found:
            raise RegistryError(f"{reference!r} matches models of several datasets: "
                                f"{', '.join(f'{m} ({d.key})' for d, m in found)}")
        raise RegistryError(errors[0] if len(errors) == 1 else f"{reference!r} is not a registered model id in "
                            f"{self.root} (see `segflow models list`)")

    def champion(self, dataset: str | None = None, spatial_dims: int | None = None,
                 n_channels: int | None = None) -> tuple[DatasetRegistry, str]:
        """The champion of `dataset`, or of the one dataset whose champion takes such inputs;
        several candidates and no `dataset` ask for --dataset."""
        if dataset:
            chosen = self.select(dataset)
            return chosen, chosen.registry.model_id(CHAMPION)
        fitting = [d for d in self.datasets() if (e := d.champion_entry()) is not None
                   and task_matches(e.get("task"), spatial_dims, n_channels)]
        if len(fitting) == 1:
            return fitting[0], fitting[0].registry.model_id(CHAMPION)
        if not fitting:
            raise RegistryError(self._no_champion(spatial_dims, n_channels))
        listed = "; ".join(f"{d.key}: {describe_task(d.champion_entry().get('task'))}" for d in fitting)
        takes = " that takes this input" if spatial_dims or n_channels else ""
        raise RegistryError(f"several datasets have a champion{takes} ({listed}): choose one with --dataset")

    def _no_champion(self, spatial_dims: int | None, n_channels: int | None) -> str:
        known = self.datasets()
        if not any(d.champion_entry() for d in known):
            return f"{self.root}: no champion model is registered yet (run the pipeline)"
        given = f"{spatial_dims or '?'}D input with {n_channels or '?'} channel(s)"
        listed = "; ".join(f"{d.key}: {describe_task((d.champion_entry() or {}).get('task'))}" for d in known)
        return f"no dataset's champion takes a {given} ({listed})"

    def resolve(self, reference: str, dataset: str | None = None, spatial_dims: int | None = None,
                n_channels: int | None = None) -> Path:
        """'champion' (of the dataset the input fits, or `dataset`), a model id or id prefix, or a
        model file (see Registry.resolve for files named like a model) -> the model file."""
        path = Path(reference).expanduser()
        if path.is_file():
            for found in self.datasets():
                found.registry.resolve(reference)  # refuses a file named exactly like a model
            return path
        if reference == CHAMPION:
            found, model_id = self.champion(dataset, spatial_dims, n_channels)
        else:
            try:
                found, model_id = self.locate(reference)
            except BrokenRegistry:
                raise
            except RegistryError as exc:
                raise RegistryError(f"{reference!r} is not a model file, and {exc}") from None
        return found.registry.resolve(model_id)


def only_dataset(catalog: Catalog) -> DatasetRegistry:
    """The one dataset registry; none or several raise RegistryError (several: choose with --dataset)."""
    known = catalog.datasets()
    if len(known) == 1:
        return known[0]
    if not known:
        raise RegistryError(f"{catalog.root}: no models registered yet (run the pipeline)")
    raise RegistryError(f"{catalog.root} holds models of several datasets ({', '.join(d.key for d in known)}): "
                        f"choose one with --dataset")


def _holds_registry(folder: Path) -> bool:
    return (folder / "index.json").exists() or (folder / "models").is_dir()
