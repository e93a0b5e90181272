"""Every named MONAI network builds from MONAI-named params and trains a step, in 2D and 3D;
deep supervision (DynUNet, BasicUNetPlusPlus) trains on all heads and infers from the main one."""

from __future__ import annotations

import importlib.util

import pytest
import torch
import yaml
from monai.losses import DiceCELoss

from segflow.config import ModelConfig
from segflow.inference.sliding_window import predict_labels
from segflow.models.factory import build_network, supports_deep_supervision
from segflow.models.losses import StackedHeadsLoss, build_loss

N_CLASSES = 3
SPATIAL = {3: (32, 32, 32), 2: (64, 64)}
# SwinUNETR downsamples by 32; at 32³ its bottleneck is one voxel, which InstanceNorm refuses in training.
SPATIAL_OVERRIDE = {("SwinUNETR", 3): (32, 64, 32)}
NEEDS_EINOPS = {"UNETR", "SwinUNETR"}


def small_args(name: str, dims: int) -> dict:
    """Few-channel MONAI constructor arguments for `name` (as a user writes them in params.yaml)."""
    dyn = dict(kernel_size=[3, 3, 3], strides=[1, 2, 2], upsample_kernel_size=[2, 2], filters=[8, 16, 32])
    per_network = {
        "UNet": dict(channels=[8, 16, 32], strides=[2, 2], num_res_units=1),
        "AttentionUnet": dict(channels=[8, 16, 32], strides=[2, 2]),
        "BasicUNetPlusPlus": dict(features=[8, 8, 16, 32, 64, 8]),
        "BasicUNetPlusPlus-ds": dict(features=[8, 8, 16, 32, 64, 8], deep_supervision=True),
        "DynUNet": dyn,
        "DynUNet-ds": dict(dyn, deep_supervision=True, deep_supr_num=1),
        "SegResNet": dict(init_filters=8),
        "UNETR": dict(img_size=list(SPATIAL[dims]), feature_size=12, hidden_size=48, mlp_dim=96, num_heads=4),
        "SwinUNETR": dict(feature_size=12, depths=[1, 1, 1, 1], num_heads=[3, 3, 3, 3]),
    }
    return dict(spatial_dims=dims, in_channels=1, out_channels=N_CLASSES, **per_network[name])


def model_cfg(variant: str, dims: int) -> ModelConfig:
    return ModelConfig(name=variant.removesuffix("-ds"), **small_args(variant, dims))


def need_einops(name: str) -> None:
    if name in NEEDS_EINOPS and importlib.util.find_spec("einops") is None:
        pytest.fail(f"MONAI's {name} needs the package einops, which this environment lacks: "
                    "add einops to pyproject.toml dependencies and requirements.lock")


def random_batch(spatial: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(2, 1, *spatial, generator=generator)
    labels = torch.randint(0, N_CLASSES, (2, 1, *spatial), generator=generator)
    return images, labels


# Each case takes at most ~1 s on 2 idle cores (the whole file ~8 s), so none is marked slow.
CASES = [pytest.param(variant, dims, id=f"{variant}-{dims}d")
         for variant in ["UNet", "AttentionUnet", "BasicUNetPlusPlus", "BasicUNetPlusPlus-ds", "DynUNet",
                         "DynUNet-ds", "SegResNet", "UNETR", "SwinUNETR"]
         for dims in (3, 2)]


@pytest.mark.parametrize("variant, dims", CASES)
def test_network_trains_a_step_and_predicts_full_size(variant, dims):
    cfg = model_cfg(variant, dims)
    need_einops(cfg.name)
    spatial = SPATIAL_OVERRIDE.get((cfg.name, dims), SPATIAL[dims])
    images, labels = random_batch(spatial)
    torch.manual_seed(0)
    net = build_network(cfg.name, cfg.network_args())
    loss_fn = build_loss(cfg)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    before = [p.detach().clone() for p in net.parameters()]

    net.train()
    loss = loss_fn(net(images), labels)
    loss.backward()
    optimizer.step()

    assert torch.isfinite(loss)
    # Biases right before a normalisation get only round-off gradients (~1e-9); the rest must move.
    trained = [(old, new) for old, new in zip(before, net.parameters()) if new.grad is not None
               and new.grad.abs().max() > 1e-6]
    assert len(trained) > len(before) / 2, "most parameters received no gradient"
    assert all(not torch.equal(old, new) for old, new in trained), "a parameter with a gradient kept its value"
    with torch.no_grad():
        assert net.eval()(images).shape == (2, N_CLASSES, *spatial)


@pytest.mark.parametrize("variant, heads", [("DynUNet-ds", 2), ("BasicUNetPlusPlus-ds", 4)])
def test_deep_supervision_outputs_stack_heads_main_first(variant, heads):
    cfg = model_cfg(variant, 2)
    images, _ = random_batch(SPATIAL[2])
    torch.manual_seed(0)
    net = build_network(cfg.name, cfg.network_args())
    with torch.no_grad():
        stacked = net.train()(images)
        main = net.eval()(images)
    assert stacked.shape == (2, heads, N_CLASSES, *SPATIAL[2])
    # InstanceNorm keeps no running statistics and dropout is off: train and eval main heads agree.
    torch.testing.assert_close(stacked[:, 0], main)


def test_deep_supervision_loss_weighs_lower_heads_by_half_on_top_of_the_main_loss():
    cfg = model_cfg("DynUNet-ds", 2)
    images, labels = random_batch(SPATIAL[2])
    torch.manual_seed(0)
    net = build_network(cfg.name, cfg.network_args()).train()
    with torch.no_grad():
        heads = net(images)
        deep = build_loss(cfg)(heads, labels)
    plain = DiceCELoss(to_onehot_y=True, softmax=True)
    main_only = plain(heads[:, 0], labels)
    assert deep > main_only
    torch.testing.assert_close(deep, main_only + 0.5 * plain(heads[:, 1], labels))


@pytest.mark.parametrize("variant", ["DynUNet-ds", "BasicUNetPlusPlus-ds"])
def test_deep_supervised_network_infers_label_maps_through_sliding_windows(variant):
    cfg = model_cfg(variant, 2)
    torch.manual_seed(0)
    net = build_network(cfg.name, cfg.network_args()).eval()
    image = torch.randn(1, 80, 96).numpy()
    labels = predict_labels(net, image, patch_size=[64, 64], amp=False)
    assert labels.shape == (80, 96)
    assert set(labels.ravel().tolist()) <= set(range(N_CLASSES))


def test_deep_supervision_is_on_only_where_the_network_has_it_and_params_ask():
    assert supports_deep_supervision("DynUNet", {"deep_supervision": True, "deep_supr_num": 2})
    assert supports_deep_supervision("BasicUNetPlusPlus", {"deep_supervision": True})
    assert not supports_deep_supervision("DynUNet", {})
    assert not supports_deep_supervision("UNet", {"deep_supervision": True})


def test_params_yaml_snippet_builds_dynunet_with_deep_supervision_loss():
    snippet = """
    name: DynUNet
    spatial_dims: 3
    in_channels: 1
    out_channels: 3
    kernel_size: [3, 3, 3, 3]
    strides: [1, 2, 2, [2, 2, 1]]
    upsample_kernel_size: [2, 2, [2, 2, 1]]
    filters: [8, 16, 32, 64]
    deep_supervision: true
    deep_supr_num: 2
    """
    cfg = ModelConfig(**yaml.safe_load(snippet))
    net = build_network(cfg.name, cfg.network_args())
    assert isinstance(build_loss(cfg), StackedHeadsLoss)
    with torch.no_grad():
        assert net.train()(torch.randn(1, 1, 16, 16, 8)).shape == (1, 3, 3, 16, 16, 8)


def test_too_many_deep_supervision_heads_is_a_value_error():
    args = dict(small_args("DynUNet-ds", 3), deep_supr_num=2)  # two upsampling layers allow one head
    with pytest.raises(ValueError, match="DynUNet.*deep_supr_num"):
        build_network("DynUNet", args)


def test_networks_without_deep_supervision_keep_the_plain_dice_ce_loss():
    loss = build_loss(model_cfg("DynUNet", 3))
    assert type(loss) is DiceCELoss
    assert loss.dice.to_onehot_y and loss.dice.softmax
