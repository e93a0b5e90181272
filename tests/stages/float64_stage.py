"""`segflow` with float64 as torch's default dtype: networks, optimiser state and the batches fed to
them are then float64 (the train loop and inference follow the network's dtype). Tests start it
as a script, alone or under torchrun, to compare training arms at float64 rounding."""

import sys

import torch

torch.set_default_dtype(torch.float64)

from segflow.cli import app  # noqa: E402 - after the default dtype is set

if __name__ == "__main__":
    sys.exit(app(sys.argv[1:]))
