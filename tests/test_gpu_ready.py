"""GPU readiness on CPU: the mixed-precision knob (key-neutral, bf16 trains), losses' parts as device tensors."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from qbert4rec_lib.models.baselines import SASRec, SASRecConfig
from qbert4rec_lib.cache import _key_view
from qbert4rec_lib.config import ConfigError
from qbert4rec_lib.data.dataset import LeaveOneOutSplit
from qbert4rec_lib.experiments.train import TrainConfig, fit

N = 30


def tiny_split(users: int = 120, seed: int = 0) -> LeaveOneOutSplit:
    rng = np.random.default_rng(seed)
    seqs = [(int(rng.integers(N)) + np.arange(int(rng.integers(5, 10)))) % N + 1 for _ in range(users)]
    return LeaveOneOutSplit([s[:-2] for s in seqs], [s[:-2] for s in seqs], np.array([s[-2] for s in seqs]),
                            [s[:-1] for s in seqs], np.array([s[-1] for s in seqs]), N, 10)


def test_amp_is_key_neutral_and_validated():
    assert "amp" not in _key_view(TrainConfig())
    assert _key_view(TrainConfig(amp="bf16"))["amp"] == "bf16"
    with pytest.raises(ConfigError, match="amp"):
        TrainConfig(amp="fp8")


@pytest.mark.parametrize("amp", ["off", "bf16"])
def test_fit_trains_with_and_without_bf16_autocast(amp):
    torch.manual_seed(0)
    model = SASRec(N, SASRecConfig(hidden_size=16, n_heads=1, inner_size=32, max_len=10))
    result = fit(model, tiny_split(), TrainConfig(epochs=6, batch_size=32, patience=0, amp=amp), progress=False)
    losses = [e["train_loss"] for e in result.history]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert isinstance(result.history[0]["parts"]["ce"], float)  # tensor parts summed on the device, floats logged


def test_loss_parts_are_tensors_not_host_floats():
    torch.manual_seed(0)
    model = SASRec(N, SASRecConfig(hidden_size=16, n_heads=1, inner_size=32, max_len=10))
    out = model.loss(torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]]))
    assert all(isinstance(v, torch.Tensor) and v.dim() == 0 for v in out.parts.values())
    assert float(out.parts["targets"]) == 5.0  # row 0 predicts 2 items (its first input is padding), row 1 predicts 3
