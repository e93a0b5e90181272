"""How much memory one training step of a MONAI network takes: what the planner sizes with.

The network is built and run once on PyTorch's `meta` device (shapes only: no data, no memory,
~30 ms for the default UNet), and a saved-tensor hook adds up what autograd keeps for the
backward pass. Parameters cost their weight, gradient and AdamW's two moments. What the trace
cannot see (gradient buffers at the widest layer, the Dice+CE loss, kernel scratch space) is
added as a measured allowance.
Checked against a measured CPU step in tests/planning/test_memory.py (within a factor of 2).
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 2**30
BYTES_PER_PARAMETER = 16  # fp32 weight + gradient + AdamW exp_avg + exp_avg_sq
# Under autocast convolutions save half-precision inputs, normalisations stay fp32.
AMP_ACTIVATION_FACTOR = 0.6
# Softmax, one-hot target, log-probabilities and Dice products, each the size of the logits.
LOSS_TENSORS_PER_OUTPUT = 8
# Backward holds the incoming and outgoing gradient of the widest layer at once.
TRANSIENT_LARGEST_TENSORS = 2
# Kernel scratch space, the autograd engine and allocator slack (a measured allowance on CPU).
RUNTIME_OVERHEAD_BYTES = 64 * 2**20
TRACE_BATCH = 2  # batch 1 can trip BatchNorm's "more than 1 value per channel" check


@dataclass(frozen=True)
class MemoryModel:
    """Training memory as a line in the batch size: fixed + batch * per_sample (bytes)."""

    fixed_bytes: float
    per_sample_bytes: float

    def total_gb(self, batch_size: int) -> float:
        return (self.fixed_bytes + batch_size * self.per_sample_bytes) / GIB

    def largest_batch(self, budget_gb: float) -> int:
        """The largest batch that fits `budget_gb` (0 when not even one sample fits)."""
        room = budget_gb * GIB - self.fixed_bytes
        return max(int(room // self.per_sample_bytes), 0) if self.per_sample_bytes > 0 else 0


def _build_on_meta(network: str, network_args: dict):
    """The network with shape-only parameters; built on CPU and moved where a constructor needs
    real values (SwinUNETR calls `.item()`)."""
    import torch

    from segflow.models.factory import build_network

    try:
        with torch.device("meta"):
            return build_network(network, network_args)
    except (RuntimeError, NotImplementedError):
        return build_network(network, network_args).to("meta")


@dataclass
class _SavedTensors:
    """Bytes autograd saves for backward, each storage counted once, parameters left out."""

    parameter_ids: set[int]
    sizes: dict[int, int]

    def pack(self, tensor):
        base = tensor._base if tensor._base is not None else tensor
        if id(base) not in self.parameter_ids:
            self.sizes[id(base)] = base.numel() * base.element_size()
        return tensor


def _trace(net, input_shape: list[int]) -> tuple[_SavedTensors, int]:
    """Run one training-mode forward pass on meta tensors; returns what was saved and the
    output's size in bytes."""
    import torch

    saved = _SavedTensors({id(p) for p in net.parameters()}, {})
    net.train()
    with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda tensor: tensor):
        output = net(torch.zeros(input_shape, device="meta"))
    return saved, output.numel() * output.element_size()


def training_memory_model(network: str, network_args: dict, patch_size: list[int],
                          amp: bool = False) -> MemoryModel:
    """Fixed and per-sample bytes of one AdamW training step of `network` on `patch_size`."""
    net = _build_on_meta(network, network_args)
    in_channels = int(network_args.get("in_channels", 1))
    try:
        saved, output_bytes = _trace(net, [TRACE_BATCH, in_channels, *patch_size])
    except (RuntimeError, ValueError) as exc:
        raise ValueError(f"{network} cannot train on patch {list(patch_size)}: {exc}") from None
    activations = sum(saved.sizes.values()) * (AMP_ACTIVATION_FACTOR if amp else 1.0)
    transient = TRANSIENT_LARGEST_TENSORS * max(saved.sizes.values(), default=0)
    per_sample = (activations + transient + LOSS_TENSORS_PER_OUTPUT * output_bytes) / TRACE_BATCH
    n_parameters = sum(p.numel() for p in net.parameters())
    fixed = n_parameters * BYTES_PER_PARAMETER + RUNTIME_OVERHEAD_BYTES
    return MemoryModel(float(fixed), float(per_sample))


def estimate_training_memory_gb(network: str, network_args: dict, patch_size: list[int],
                                batch_size: int, amp: bool = False) -> float:
    """Estimated peak memory (GiB) of one training step at `batch_size`: parameters, gradients,
    optimizer state, saved activations and the loss."""
    return training_memory_model(network, network_args, patch_size, amp).total_gb(batch_size)
