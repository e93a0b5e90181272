"""train.device is obeyed: a GPU job whose node lost its GPU fails instead of training on CPU."""

from __future__ import annotations

import pytest
import torch

from segflow.errors import StageFailed
from segflow.stages.train import training_device


def test_cpu_is_cpu_even_where_a_gpu_is_present():
    assert training_device("cpu").type == "cpu"


def test_auto_takes_the_gpu_when_there_is_one():
    assert training_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(StageFailed, match="train.device is cuda but no CUDA GPU is visible"):
        training_device("cuda")
