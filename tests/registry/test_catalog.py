"""One registry per dataset: champions are kept apart, 'champion' means the champion of the data
given (or of --dataset), and ids resolve across datasets."""

from __future__ import annotations

from pathlib import Path

import pytest

from segflow.inference.predict import Job, input_task
from segflow.registry.catalog import LEGACY, Catalog, dataset_key, describe_task
from segflow.registry.store import Registry, RegistryError

HIPPOCAMPUS = {"spatial_dims": 3, "n_channels": 1, "modality": {"0": "MRI"}, "regions": None,
               "labels": {"0": "background", "1": "anterior", "2": "posterior"}}
BRATS = {**HIPPOCAMPUS, "n_channels": 4, "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}}
MEMBRANES = {"spatial_dims": 2, "n_channels": 1, "modality": {}, "regions": None,
             "labels": {"0": "background", "1": "membrane"}}


def register(catalog: Catalog, name: str, task: dict, tmp_path: Path) -> str:
    model = tmp_path / f"{name}.pt"
    model.write_bytes(name.encode())
    registry = catalog.for_dataset(dataset_key(name, task))
    return registry.add(model, {"dataset": name, "task": task}, {}, lambda champion: (champion is None, "first"))[0]


@pytest.fixture
def catalog(tmp_path) -> tuple[Catalog, dict[str, str]]:
    catalog = Catalog(tmp_path / "registry")
    return catalog, {name: register(catalog, name, task, tmp_path)
                     for name, task in (("Hippocampus", HIPPOCAMPUS), ("membranes", MEMBRANES))}


def test_the_key_is_the_name_and_the_task():
    assert dataset_key("Hippocampus", HIPPOCAMPUS).startswith("Hippocampus-")
    assert dataset_key("Hippocampus", HIPPOCAMPUS) != dataset_key("Hippocampus", BRATS)
    assert dataset_key("my data/v2", MEMBRANES).startswith("my_data_v2-")
    assert describe_task(BRATS) == "3D, 4 ch (FLAIR, T1w, t1gd, T2w), 2 classes"
    assert describe_task(MEMBRANES) == "2D, 1 ch, 1 class"


def test_a_second_dataset_gets_its_own_champion(catalog):
    catalog, ids = catalog
    champions = {d.name(): d.champion_entry() for d in catalog.datasets()}
    assert set(champions) == {"Hippocampus", "membranes"} and all(champions.values())
    assert catalog.champion(spatial_dims=2, n_channels=None)[1] == ids["membranes"]
    assert catalog.champion(spatial_dims=3, n_channels=1)[1] == ids["Hippocampus"]
    assert catalog.champion("membranes")[1] == ids["membranes"]


def test_champion_asks_for_a_dataset_when_several_fit(catalog, tmp_path):
    catalog, ids = catalog
    register(catalog, "Hippocampus-site2", {**HIPPOCAMPUS, "modality": {"0": "T1"}}, tmp_path)
    with pytest.raises(RegistryError, match="champion that takes this input .*choose one with --dataset"):
        catalog.champion(spatial_dims=3, n_channels=1)
    with pytest.raises(RegistryError, match=r"several datasets have a champion \(Hippocampus-"):
        catalog.champion()  # `models show` names no input
    with pytest.raises(RegistryError, match="no dataset's champion takes a 3D input with 4 channel"):
        catalog.champion(spatial_dims=3, n_channels=4)
    with pytest.raises(RegistryError, match="names no dataset"):
        catalog.champion("nosuch")


def test_ids_resolve_across_datasets(catalog):
    catalog, ids = catalog
    found, model_id = catalog.locate(ids["membranes"][:20])
    assert model_id == ids["membranes"] and found.name() == "membranes"
    assert catalog.resolve(ids["Hippocampus"]).parent.name == ids["Hippocampus"]
    with pytest.raises(RegistryError, match="is not a model file"):
        catalog.resolve("nosuch")


def test_a_registry_from_before_is_one_more_dataset(tmp_path):
    root = tmp_path / "registry"
    model = tmp_path / "old.pt"
    model.write_bytes(b"old")
    old = Registry(root).add(model, {"dataset": "Hippocampus"}, {}, lambda champion: (True, "first"))[0]
    catalog = Catalog(root)
    (legacy,) = catalog.datasets()
    assert legacy.key == LEGACY and legacy.label() == "Hippocampus"
    assert catalog.champion(spatial_dims=3, n_channels=1)[1] == old  # no task recorded: fits any input


def test_the_inputs_task_comes_from_their_format_and_channel_files(tmp_path):
    png = [Job(tmp_path / "a.png", tmp_path / "out" / "a.png")]
    assert input_task(png) == {"spatial_dims": 2, "n_channels": None}
    four = [Job(tmp_path / "c.nii.gz", tmp_path / "out" / "c.nii.gz",
                tuple(tmp_path / f"c_000{i}.nii.gz" for i in range(4)))]
    assert input_task(four) == {"spatial_dims": 3, "n_channels": 4}
