"""Checkpoints: the config fingerprint, a faithful round trip, and refusing what must not resume."""

from __future__ import annotations

import pytest
import torch
from training_fixtures import NET_ARGS

from segflow.models.factory import build_network
from segflow.tracking.runs import RunIdentity
from segflow.training import checkpoint as C


def test_fingerprint_changes_with_any_section_but_not_key_order():
    train = {"epochs": 3, "lr": 0.003}
    model = {"name": "UNet", "channels": [4, 8]}
    base = C.config_fingerprint(0, model, train)
    assert C.config_fingerprint(0, dict(reversed(model.items())), dict(reversed(train.items()))) == base
    assert C.config_fingerprint(0, model, {**train, "lr": 0.001}) != base
    assert C.config_fingerprint(0, {**model, "channels": [8, 16]}, train) != base
    assert C.config_fingerprint(1, model, train) != base


def tiny_setup(seed: int = 0):
    torch.manual_seed(seed)
    net = build_network("UNet", NET_ARGS)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return net, optimizer, scaler


def one_step(net, optimizer):
    optimizer.zero_grad()
    net(torch.randn(1, 1, 16, 16, 16)).mean().backward()
    optimizer.step()


def test_checkpoint_round_trip_restores_weights_optimizer_history_and_wandb_run(tmp_path):
    net, optimizer, scaler = tiny_setup(0)
    one_step(net, optimizer)
    state = C.TrainState(epoch=2, history=[{"epoch": 1, "train_loss": 0.9}, {"epoch": 2, "train_loss": 0.8}],
                         tracked_run=RunIdentity(run_id="a1b2c3d4", group="dvc-20260101-000000-42-abc1234"))
    path = tmp_path / "checkpoints" / "last.pt"
    C.save_checkpoint(path, "fp-1", state, net, optimizer, scaler)

    fresh_net, fresh_optimizer, fresh_scaler = tiny_setup(1)
    restored = C.resume_checkpoint(path, "fp-1", fresh_net, fresh_optimizer, fresh_scaler)

    assert restored == state
    for key, value in net.state_dict().items():
        assert torch.equal(fresh_net.state_dict()[key], value), key
    first = next(iter(optimizer.state.values()))
    fresh_first = next(iter(fresh_optimizer.state.values()))
    assert torch.equal(first["exp_avg"], fresh_first["exp_avg"])
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]


def test_checkpoint_of_another_config_is_not_resumed(tmp_path):
    net, optimizer, scaler = tiny_setup(0)
    path = tmp_path / "last.pt"
    C.save_checkpoint(path, "fp-old", C.TrainState(epoch=5), net, optimizer, scaler)

    fresh_net, fresh_optimizer, fresh_scaler = tiny_setup(1)
    before = {k: v.clone() for k, v in fresh_net.state_dict().items()}
    assert C.resume_checkpoint(path, "fp-new", fresh_net, fresh_optimizer, fresh_scaler) is None
    assert all(torch.equal(before[k], v) for k, v in fresh_net.state_dict().items())


@pytest.mark.parametrize("damage", ["truncated", "text", "pickled-code"])
def test_a_damaged_checkpoint_stops_training_naming_the_file_and_the_way_out(tmp_path, damage):
    import pickle

    from segflow.errors import StageFailed

    path = tmp_path / "last.pt"
    net, optimizer, scaler = tiny_setup()
    C.save_checkpoint(path, "fp", C.TrainState(epoch=3), net, optimizer, scaler)
    whole = path.read_bytes()
    path.write_bytes({"truncated": whole[: len(whole) // 2], "text": b"not a checkpoint\n",
                      "pickled-code": pickle.dumps(print)}[damage])
    with pytest.raises(StageFailed) as refused:
        C.resume_checkpoint(path, "fp", *tiny_setup())
    message = str(refused.value)
    assert str(path) in message and "from scratch" in message and "weights_only" not in message
    assert path.exists(), "the checkpoint must be left for the user to judge"


def test_no_checkpoint_means_fresh_start(tmp_path):
    assert C.resume_checkpoint(tmp_path / "missing.pt", "fp", *tiny_setup()) is None
