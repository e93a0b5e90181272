"""Build a MONAI network from its name and MONAI's own constructor arguments.

params.yaml `model:` keys are passed straight to the MONAI class, so its documentation is
ours; unknown or missing arguments fail at once with a ValueError naming them.
"""

from __future__ import annotations

import inspect

NETWORKS = {
    "UNet": "monai.networks.nets.UNet",
    "AttentionUnet": "monai.networks.nets.AttentionUnet",
    "BasicUNet": "monai.networks.nets.BasicUNet",
    "BasicUNetPlusPlus": "monai.networks.nets.BasicUNetPlusPlus",
    "DynUNet": "monai.networks.nets.DynUNet",
    "SegResNet": "monai.networks.nets.SegResNet",
    "UNETR": "monai.networks.nets.UNETR",
    "SwinUNETR": "monai.networks.nets.SwinUNETR",
}


def network_class(name: str) -> type:
    """The MONAI class registered under `name`."""
    if name not in NETWORKS:
        raise ValueError(f"model.name: unknown network {name!r}; choose one of {sorted(NETWORKS)}")
    module_name, _, class_name = NETWORKS[name].rpartition(".")
    import importlib

    return getattr(importlib.import_module(module_name), class_name)


def check_arguments(name: str, cls: type, args: dict) -> None:
    """Refuse arguments the constructor does not take, and required ones that are missing."""
    signature = inspect.signature(cls.__init__)
    accepted = {p for p in signature.parameters if p != "self"}
    unknown = sorted(set(args) - accepted)
    if unknown:
        raise ValueError(f"model: {name} takes no argument(s) {unknown}; it accepts {sorted(accepted)}")
    required = {
        p.name for p in signature.parameters.values()
        if p.default is inspect.Parameter.empty and p.name != "self"
        and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
    missing = sorted(required - set(args))
    if missing:
        raise ValueError(f"model: {name} needs argument(s) {missing}")


def build_network(name: str, args: dict):
    """Instantiate network `name` with MONAI constructor `args`."""
    cls = network_class(name)
    check_arguments(name, cls, args)
    try:
        return cls(**args)
    except (TypeError, ValueError, AssertionError) as exc:
        raise ValueError(f"model: {name}{args} cannot be built: {exc}") from None
