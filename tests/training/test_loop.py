"""The loop: the LR schedule, and exact resume after an interruption (the loop, loader seeding
and checkpoint together, as a restarted process runs them)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from training_fixtures import CASES, NET_ARGS, PATCH, SEED, augment_config, deterministic_cpu, synthetic_cache  # noqa: F401

from segflow.data.cache import PreprocessedCache
from segflow.models.factory import build_network
from segflow.training import checkpoint as C
from segflow.training import loader as L
from segflow.training import loop as T


def test_poly_lr_starts_at_base_and_ends_at_zero():
    assert T.poly_lr(0.01, 0, 40) == pytest.approx(0.01)
    assert T.poly_lr(0.01, 40, 40) == 0.0
    schedule = [T.poly_lr(0.01, e, 40) for e in range(40)]
    assert all(a > b > 0 for a, b in zip(schedule, schedule[1:]))


class Run:
    """What the train stage builds, made fresh (as a restarted process would)."""

    def __init__(self, cache: Path, init_seed: int, channels_last: bool = False):
        from monai.losses import DiceCELoss

        from segflow.transforms.three_d import build_cached_transforms, build_random_transforms

        cfg = augment_config()
        torch.manual_seed(init_seed)
        self.net = build_network("UNet", NET_ARGS).to(memory_format=T.memory_format(channels_last, 3))
        self.optimizer = torch.optim.AdamW(self.net.parameters(), lr=0.01, weight_decay=1e-5)
        self.scaler = torch.amp.GradScaler("cpu", enabled=False)
        self.loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
        self.loader = L.build_loader(PreprocessedCache(cache).load(CASES), build_cached_transforms(PATCH),
                                     build_random_transforms(cfg, PATCH), batch_size=2)

    def epochs(self, start: int, stop: int, total: int) -> list[float]:
        losses = []
        for epoch in range(start, stop):
            for group in self.optimizer.param_groups:
                group["lr"] = T.poly_lr(0.01, epoch, total)
            L.seed_epoch(self.loader, SEED, epoch)
            losses.append(T.train_epoch(self.net, self.loader, self.loss_fn, self.optimizer, self.scaler,
                                        torch.device("cpu"), amp=False))
        return losses


@pytest.mark.parametrize("channels_last", [False, True])
def test_resumed_training_matches_uninterrupted_training(tmp_path, synthetic_cache, deterministic_cpu, channels_last):
    straight = Run(synthetic_cache, init_seed=SEED, channels_last=channels_last)
    straight_losses = straight.epochs(0, 3, total=3)

    interrupted = Run(synthetic_cache, init_seed=SEED, channels_last=channels_last)
    first_losses = interrupted.epochs(0, 2, total=3)
    checkpoint = tmp_path / "checkpoints" / "last.pt"
    C.save_checkpoint(checkpoint, "fp", C.TrainState(epoch=2), interrupted.net, interrupted.optimizer,
                      interrupted.scaler)
    del interrupted

    resumed = Run(synthetic_cache, init_seed=SEED + 1, channels_last=channels_last)  # weights from the checkpoint
    state = C.resume_checkpoint(checkpoint, "fp", resumed.net, resumed.optimizer, resumed.scaler)
    assert state is not None and state.epoch == 2
    last_loss = resumed.epochs(state.epoch, 3, total=3)

    assert first_losses + last_loss == straight_losses
    expected, actual = straight.net.state_dict(), resumed.net.state_dict()
    assert expected.keys() == actual.keys()
    different = {k: float((expected[k].float() - actual[k].float()).abs().max())
                 for k in expected if not torch.equal(expected[k], actual[k])}
    assert not different, f"resumed weights differ from uninterrupted ones (max abs diff): {different}"
