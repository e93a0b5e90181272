"""The training-memory estimate the planner sizes patch and batch with: cheap, and close to what a
real CPU training step takes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest

from segflow.planning.memory import estimate_training_memory_gb, training_memory_model

DEFAULT_UNET = {"spatial_dims": 3, "in_channels": 1, "out_channels": 3, "channels": [16, 32, 64, 128],
                "strides": [2, 2, 2], "num_res_units": 2, "norm": "instance"}
PATCH = [40, 56, 40]

# One AdamW step with the Dice+CE loss, as train runs it; the peak resident memory (VmHWM, reset
# once the inputs exist) minus the resident memory before the network was built.
MEASURE_STEP = textwrap.dedent("""
    import json, sys
    import torch
    from monai.losses import DiceCELoss
    from segflow.models.factory import build_network

    args, patch, batch = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
    torch.set_num_threads(1)

    def status_bytes(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1]) * 1024

    images = torch.randn(batch, 1, *patch)
    labels = torch.randint(0, args["out_channels"], (batch, 1, *patch))
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")  # resets VmHWM to the current resident size
    before = status_bytes("VmRSS:")
    net = build_network("UNet", args).train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    loss_fn(net(images), labels).backward()
    optimizer.step()
    print(json.dumps((status_bytes("VmHWM:") - before) / 2**30))
""")


def measure_training_step_gb(args: dict, patch: list[int], batch: int) -> float:
    done = subprocess.run([sys.executable, "-c", MEASURE_STEP, json.dumps(args), json.dumps(patch), str(batch)],
                          capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0 and "clear_refs" in done.stderr:
        pytest.skip("this kernel does not let a process reset its peak RSS (/proc/self/clear_refs)")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # a real subprocess or several processes: seconds, not milliseconds
def test_estimate_agrees_with_a_measured_cpu_training_step_within_a_factor_of_two():
    measured = measure_training_step_gb(DEFAULT_UNET, PATCH, batch=2)
    estimated = estimate_training_memory_gb("UNet", DEFAULT_UNET, PATCH, batch_size=2)
    assert measured / 2 <= estimated <= measured * 2, f"estimated {estimated:.3f} GB, measured {measured:.3f} GB"


def test_estimate_of_the_default_config_takes_well_under_a_second():
    estimate_training_memory_gb("UNet", DEFAULT_UNET, PATCH, 4)  # MONAI's imports are paid once
    start = time.perf_counter()
    estimate_training_memory_gb("UNet", DEFAULT_UNET, PATCH, 4)
    assert time.perf_counter() - start < 0.5


def test_memory_grows_linearly_with_the_batch_and_the_largest_batch_fits():
    model = training_memory_model("UNet", DEFAULT_UNET, PATCH)
    one, four = model.total_gb(1), model.total_gb(4)
    assert four - one == pytest.approx(3 * (model.total_gb(2) - one))
    assert one < four
    batch = model.largest_batch(1.0)
    assert model.total_gb(batch) <= 1.0 < model.total_gb(batch + 1)


def test_wider_networks_larger_patches_and_no_amp_cost_more():
    base = estimate_training_memory_gb("UNet", DEFAULT_UNET, PATCH, 2)
    wider = dict(DEFAULT_UNET, channels=[32, 64, 128, 256])
    assert estimate_training_memory_gb("UNet", wider, PATCH, 2) > base
    assert estimate_training_memory_gb("UNet", DEFAULT_UNET, [64, 64, 64], 2) > base
    assert estimate_training_memory_gb("UNet", DEFAULT_UNET, PATCH, 2, amp=True) < base


def test_a_patch_the_network_cannot_train_on_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match=r"UNet cannot train on patch \[2, 2, 2\]"):
        estimate_training_memory_gb("UNet", DEFAULT_UNET, [2, 2, 2], 2)
