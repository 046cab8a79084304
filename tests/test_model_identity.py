"""Every sequence model's parameters (state_dict keys, in order) and numbers on a fixed seed, pinned.

Cached trained weights are loaded by state_dict key, and committed result records hold numbers of trained models:
a refactor of the shared transformer pieces (:mod:`qbert4rec_lib.models.layers`: padding masks, weight init) must
keep both. The pins were taken before the pieces were shared (the layout refactor) and still hold bit for bit on
the machine that took them; the tolerances only allow another CPU's floating-point differences.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from qbert4rec_lib.cache import stable_hash
from qbert4rec_lib.models.baselines import BERT4RecConfig, BERT4RecID, SASRec, SASRecConfig
from qbert4rec_lib.models.qbert import QBert4Rec, QBertConfig

# name -> (number of state_dict keys, stable_hash of the keys in order, loss, sum and sum of squares of the finite
# scores, sum of squares of every floating state tensor)
PINS = {
    "sasrec": (28, "85aeabdf72cb67f4", 3.702681303024292, -0.8518147052964196, 1.1837241153266382, 130.5004638377256),
    "bert4rec": (33, "e6db3324c21297f2", 3.7286553382873535, 2.6333939226315124, 1.4118775606542302, 146.13724009291892),
    "qbert": (57, "950207c6bae2c5f9", 3.689073085784912, 0.10350250908368253, 0.00014021383163543847, 217.1138069458913),
    "qbert_levelsum": (54, "a4456516b52c0e28", 3.6620051860809326, -1163.1677227020264, 5640.2091362148285, 195.98451347638846),
    "qbert_itemvec": (58, "e307a791d640b8eb", 3.6889395713806152, 0.07380490439027199, 0.00010076824656789819, 217.1138069458913),
}


def _model(name: str):
    ids = np.random.default_rng(0).integers(0, 5, size=(40, 3))
    torch.manual_seed(0)
    if name == "sasrec":
        return SASRec(40, SASRecConfig(hidden_size=16, n_heads=2, inner_size=32, max_len=12))
    if name == "bert4rec":
        return BERT4RecID(40, BERT4RecConfig(hidden_size=16, n_heads=2, inner_size=32, max_len=13))
    if name == "qbert":
        return QBert4Rec(ids, None, QBertConfig(hidden=16, heads=2, max_len=12))
    if name == "qbert_levelsum":
        return QBert4Rec(ids, None, QBertConfig(hidden=16, heads=2, max_len=12, item_head="level_sum", tie_head=False,
                                                add_item_id_embedding=True, item_bias=True))
    return QBert4Rec(ids, None, QBertConfig(hidden=16, heads=2, max_len=12, input_embedding="item_vector",
                                            group_by_length=False))


def _batch() -> torch.Tensor:
    x = torch.randint(1, 41, (6, 12), generator=torch.Generator().manual_seed(3))
    x[1, :7] = 0
    x[2, :11] = 0
    x[3, :] = 0  # an empty history: every key is padding
    return x


@pytest.mark.parametrize("name", list(PINS))
def test_state_dict_keys_and_numbers_are_pinned(name):
    count, keys_hash, loss, score_sum, score_sq, param_sq = PINS[name]
    model = _model(name)
    state = model.state_dict()
    assert (len(state), stable_hash(list(state))) == (count, keys_hash)
    assert sum(float((v.double() ** 2).sum()) for v in state.values() if v.is_floating_point()) == pytest.approx(param_sq, rel=1e-6)
    x = _batch()
    model.eval()
    with torch.no_grad():
        scores = model.score_all(x).double()
    finite = scores[torch.isfinite(scores)]
    assert float(finite.sum()) == pytest.approx(score_sum, rel=1e-5, abs=1e-6)
    assert float((finite ** 2).sum()) == pytest.approx(score_sq, rel=1e-5, abs=1e-9)
    model.train()
    x[3, -3:] = torch.tensor([5, 6, 7])
    torch.manual_seed(1)
    assert float(model.loss(x, torch.Generator().manual_seed(2)).loss.detach()) == pytest.approx(loss, rel=1e-5)
