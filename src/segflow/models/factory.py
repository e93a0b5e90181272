"""Build a MONAI network from its name and MONAI's own constructor arguments.

params.yaml `model:` keys are passed straight to the MONAI class, so its documentation is
ours; unknown or missing arguments fail at once with a ValueError naming them.

Every network built here follows one output contract: in eval mode a tensor (B, C, *spatial);
in training mode with deep supervision a tensor (B, 1 + heads, C, *spatial), main head first,
as MONAI's DynUNet returns it (BasicUNetPlusPlus, which returns a list, is adapted to it).
"""

from __future__ import annotations

import functools
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
# Networks with extra output heads (deep supervision), switched on by MONAI's `deep_supervision` arg.
DEEP_SUPERVISION = ("DynUNet", "BasicUNetPlusPlus")


def network_class(name: str) -> type:
    """The MONAI class registered under `name`."""
    if name not in NETWORKS:
        raise ValueError(f"model.name: unknown network {name!r}; choose one of {sorted(NETWORKS)}")
    module_name, _, class_name = NETWORKS[name].rpartition(".")
    import importlib

    return getattr(importlib.import_module(module_name), class_name)


def required_arguments(cls: type) -> set[str]:
    """Constructor arguments of `cls` that have no default."""
    parameters = inspect.signature(cls.__init__).parameters.values()
    return {p.name for p in parameters if p.default is inspect.Parameter.empty and p.name != "self"
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}


def check_arguments(name: str, cls: type, args: dict) -> None:
    """Refuse arguments the constructor does not take, and required ones that are missing."""
    signature = inspect.signature(cls.__init__)
    accepted = {p for p in signature.parameters if p != "self"}
    unknown = sorted(set(args) - accepted)
    if unknown:
        raise ValueError(f"model: {name} takes no argument(s) {unknown}; it accepts {sorted(accepted)}")
    missing = sorted(required_arguments(cls) - set(args))
    if missing:
        raise ValueError(f"model: {name} needs argument(s) {missing}")


SLICE_AXIS = "slice_axis"  # in network_args: a 2D network run slice by slice over 3D data (nnU-Net's 2d)


def network_dims(args: dict) -> int:
    """The dimensions the network's own layers have (2 for a slice-wise network of 3D data)."""
    return 2 if args.get(SLICE_AXIS) is not None else int(args.get("spatial_dims", 3))


def build_network(name: str, args: dict):
    """Instantiate network `name` with MONAI constructor `args`; with `slice_axis` set, a 2D
    network of the other arguments wrapped to take and return 3D tensors (`SliceWise`)."""
    if args.get(SLICE_AXIS) is not None:
        inner = {k: v for k, v in args.items() if k != SLICE_AXIS}
        return slice_wise_class()(build_network(name, {**inner, "spatial_dims": 2}), int(args[SLICE_AXIS]))
    cls = network_class(name)
    check_arguments(name, cls, args)
    try:
        net = cls(**args)
    except (TypeError, ValueError, AssertionError) as exc:
        raise ValueError(f"model: {name}{args} cannot be built: {exc}") from None
    if name == "BasicUNetPlusPlus":
        net.register_forward_hook(heads_as_tensor)
    return net


def supports_deep_supervision(name: str, args: dict) -> bool:
    """True when network `name` built from `args` returns deep-supervision heads in training mode."""
    return name in DEEP_SUPERVISION and bool(args.get("deep_supervision", False))


def heads_as_tensor(module, inputs, output):
    """Forward hook giving BasicUNetPlusPlus DynUNet's output contract.

    MONAI's BasicUNetPlusPlus always returns a list of full-size heads, shallowest first (only the
    last with `deep_supervision: false`), which neither a loss nor sliding-window inference takes.
    A hook, not a subclass, so the class and the state_dict keys stay MONAI's.
    """
    if module.training and module.deep_supervision:
        import torch

        return torch.stack(output[::-1], dim=1)
    return output[-1]


@functools.cache
def slice_wise_class() -> type:
    """`SliceWise`, defined on first use so that importing this module does not import torch."""
    import torch

    class SliceWise(torch.nn.Module):
        """A 2D network over a 3D tensor: every slice along `axis` goes through it as its own batch
        item, so the same network trains on one-slice patches and predicts whole volumes."""

        def __init__(self, net: torch.nn.Module, axis: int):
            super().__init__()
            self.net, self.axis = net, axis

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            dim = 2 + self.axis  # after batch and channel
            moved = x.movedim(dim, 1)  # (B, S, C, *plane)
            batch, slices = moved.shape[:2]
            out = self.net(moved.reshape(batch * slices, *moved.shape[2:]))
            # Deep-supervision heads in training add a dim after the batch: (B*S, heads, C, *plane).
            heads = out.ndim - (moved.ndim - 1)
            return out.reshape(batch, slices, *out.shape[1:]).movedim(1, dim + heads)

    return SliceWise

