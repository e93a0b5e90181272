"""Planning test helpers: fingerprints written by hand (the planner is a pure function of them)
and params built from this repo's params.yaml, so the planner is tested on the settings users run.

A plain module, not a conftest.py: a second module named `conftest` would shadow the root one
that other test modules import from."""

from __future__ import annotations

import itertools

import yaml
from conftest import REPO, merge

from segflow.config import Params, parse_params

# Hippocampus (MSD Task04): 1 mm isotropic, median shape [35, 50, 36] over the kept cases.
HIPPOCAMPUS_SHAPES = [[35, 50, 36], [31, 41, 24], [43, 59, 47], [34, 48, 35], [36, 52, 38]]


THREE_CLASSES = {"0": "background", "1": "anterior", "2": "posterior"}  # as params.yaml's out_channels: 3


def make_fingerprint(shapes, spacings, modality="MRI", statistics=None, n_channels=1, labels=None) -> dict:
    """A fingerprint as compute_fingerprint writes it, for the keys the planner reads."""
    return {
        "format": "segflow-fingerprint/1", "n_cases": len(shapes), "spatial_dims": len(shapes[0]),
        "n_channels": n_channels, "modality": {str(c): modality for c in range(n_channels)},
        "labels": dict(THREE_CLASSES if labels is None else labels),
        "spacings": [list(map(float, s)) for s in spacings], "shapes": [list(s) for s in shapes],
        "foreground_intensity": {str(c): statistics for c in range(n_channels)},
    }


def hippocampus_fingerprint(**overrides) -> dict:
    shapes = overrides.pop("shapes", HIPPOCAMPUS_SHAPES)
    return make_fingerprint(shapes, [[1.0] * len(shapes[0])] * len(shapes), **overrides)


def repo_params(overrides: dict | None = None) -> Params:
    """params.yaml of this repo with `overrides` merged in (a `null` drops a model key)."""
    raw = merge(yaml.safe_load((REPO / "params.yaml").read_text()), overrides or {})
    raw["model"] = {k: v for k, v in raw["model"].items() if v is not None}
    return parse_params(raw)


def model_params(name: str, spatial_dims: int = 3, **args) -> Params:
    """params.yaml's settings with model `name` and only these constructor args."""
    params = repo_params()
    raw = params.model_dump(by_alias=True)
    raw["model"] = {"name": name, "spatial_dims": spatial_dims, "in_channels": 1, "out_channels": 3, **args}
    return parse_params(raw)


def anisotropic_cases(n: int = 10) -> tuple[list, list]:
    """Thick-slice cases: 0.8 mm in plane, mostly 5 mm between slices, some 2.5 mm; 60 mm deep."""
    z_spacings = list(itertools.islice(itertools.cycle([5.0, 5.0, 5.0, 4.0, 2.5]), n))
    shapes = [[128, 128, int(round(60 / z))] for z in z_spacings]
    return shapes, [[0.8, 0.8, z] for z in z_spacings]
