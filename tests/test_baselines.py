"""Baselines (Popularity, SASRec, BERT4Rec-ID) and the generic trainer on tiny synthetic sequences."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from qbert4rec_lib.models.baselines import (
    BERT4RecConfig,
    BERT4RecID,
    Popularity,
    SASRec,
    SASRecConfig,
)
from qbert4rec_lib.data.dataset import LeaveOneOutSplit
from qbert4rec_lib.models.layers import attention_mask
from qbert4rec_lib.experiments.evaluate import EvalConfig, evaluate_split, results_table
from qbert4rec_lib.models.base import LossOutput, SequentialRecommender, pad_left
from qbert4rec_lib.experiments.train import TrainConfig, fit, make_batches

NUM_ITEMS = 20
MAX_LEN = 10


def make_split(sequences: list[np.ndarray], num_items: int = NUM_ITEMS, max_len: int = MAX_LEN) -> LeaveOneOutSplit:
    def cut(a):
        return a[-max_len:]

    return LeaveOneOutSplit(
        train=[cut(s[:-2]) for s in sequences],
        valid_history=[cut(s[:-2]) for s in sequences],
        valid_target=np.array([s[-2] for s in sequences]),
        test_history=[cut(s[:-1]) for s in sequences],
        test_target=np.array([s[-1] for s in sequences]),
        num_items=num_items,
        max_len=max_len,
    )


@pytest.fixture(scope="module")
def cycles() -> LeaveOneOutSplit:
    """Users walk the cycle 1 -> 2 -> ... -> 20 -> 1 from a random start: next item = current + 1."""
    rng = np.random.default_rng(0)
    seqs = []
    for _ in range(200):
        start, length = rng.integers(0, NUM_ITEMS), rng.integers(4, 13)
        seqs.append(np.array([(start + t) % NUM_ITEMS + 1 for t in range(length)], dtype=np.int64))
    return make_split(seqs)


def small_sasrec(seed: int = 0) -> SASRec:
    torch.manual_seed(seed)
    return SASRec(NUM_ITEMS, SASRecConfig(hidden_size=32, max_len=MAX_LEN, dropout=0.1, attn_dropout=0.1))


def small_bert(seed: int = 0) -> BERT4RecID:
    torch.manual_seed(seed)
    return BERT4RecID(NUM_ITEMS, BERT4RecConfig(hidden_size=32, max_len=MAX_LEN, dropout=0.1, attn_dropout=0.1))


FAST = TrainConfig(epochs=15, batch_size=32, lr=5e-3, max_len=MAX_LEN, patience=3)


# ---- model contract --------------------------------------------------------------------------
@pytest.mark.parametrize("make", [small_sasrec, small_bert])
def test_score_all_shape_padding_column_and_padding_invariance(make):
    model = make().eval()
    histories = [np.array([3, 4, 5]), np.array([7]), np.arange(1, 10)]
    with torch.no_grad():
        short = model.score_all(pad_left(histories, 9))  # [3, N+1]
        long = model.score_all(pad_left(histories, MAX_LEN))  # more left padding, same histories
    assert short.shape == (3, NUM_ITEMS + 1)
    assert torch.isneginf(short[:, 0]).all()
    assert torch.isfinite(short[:, 1:]).all()
    torch.testing.assert_close(short, long, rtol=1e-4, atol=1e-5)


def test_sasrec_is_causal():
    model = small_sasrec().eval()
    a = torch.tensor([[0, 0, 3, 4, 5, 6]])
    b = torch.tensor([[0, 0, 3, 4, 9, 1]])  # differs only after position 3
    with torch.no_grad():
        ha, hb = model.backbone(a), model.backbone(b)
    torch.testing.assert_close(ha[:, :4], hb[:, :4])
    assert not torch.allclose(ha[:, 4:], hb[:, 4:])


def test_attention_mask_hides_padding_keys_but_never_a_whole_row():
    mask = attention_mask(torch.tensor([[0, 0, 5, 6]]), n_heads=2, causal=True)  # [2, 4, 4]
    assert mask.shape == (2, 4, 4)
    visible = torch.isfinite(mask[0])
    assert visible.any(dim=1).all()  # every query sees at least itself
    assert visible[3].tolist() == [False, False, True, True]  # newest item: real keys up to itself
    assert visible[2].tolist() == [False, False, True, False]  # causal
    assert visible[0].tolist() == [True, False, False, False]  # a padding row sees only itself


def test_sasrec_loss_predicts_every_real_next_item():
    model = small_sasrec()
    batch = pad_left([np.array([1, 2, 3, 4]), np.array([5, 6]), np.array([7])], 5)
    out = model.loss(batch)
    assert isinstance(out, LossOutput) and out.loss.requires_grad
    assert out.parts["targets"] == 3 + 1 + 0  # (len - 1) per sequence; one-item sequences give none
    lonely = model.loss(pad_left([np.array([7])], 3))  # nothing to predict: a zero that backprops
    assert float(lonely.loss.detach()) == 0.0 and lonely.loss.requires_grad


def test_bert_cloze_mask_never_touches_padding():
    model = BERT4RecID(NUM_ITEMS, BERT4RecConfig(max_len=MAX_LEN, mask_ratio=0.6, ft_ratio=0.3))
    rng = np.random.default_rng(0)
    batch = pad_left([rng.integers(1, NUM_ITEMS + 1, size=rng.integers(1, MAX_LEN + 1)) for _ in range(500)], MAX_LEN)
    gen = torch.Generator().manual_seed(0)
    masked = model.cloze_mask(batch, gen)
    assert not masked[batch == 0].any()
    assert 0.3 < masked[batch != 0].float().mean() < 0.7  # about 0.7 * 0.6 + 0.3 * (share of last items)
    only_last = BERT4RecID(NUM_ITEMS, BERT4RecConfig(max_len=MAX_LEN, ft_ratio=1.0)).cloze_mask(batch, gen)
    assert only_last[:, :-1].sum() == 0 and only_last[:, -1].all()
    never = BERT4RecID(NUM_ITEMS, BERT4RecConfig(max_len=MAX_LEN, mask_ratio=0.0, ft_ratio=0.0)).cloze_mask(batch, gen)
    assert not never.any()
    same = model.cloze_mask(batch, torch.Generator().manual_seed(5))
    assert torch.equal(same, model.cloze_mask(batch, torch.Generator().manual_seed(5)))


def test_bert_scoring_appends_mask_and_keeps_the_window():
    model = small_bert().eval()
    full = torch.arange(1, MAX_LEN + 1).unsqueeze(0)  # history fills the window: oldest item dropped
    dropped = torch.cat([torch.zeros(1, 1, dtype=torch.long), full[:, 1:]], dim=1)
    with torch.no_grad():
        torch.testing.assert_close(model.score_all(full), model.score_all(dropped), rtol=1e-4, atol=1e-5)


def test_popularity_scores_are_train_counts(cycles):
    model = Popularity.from_split(cycles)
    counts = cycles.train_item_counts()
    scores = model.score_all(pad_left(cycles.test_history[:4], MAX_LEN))
    assert scores.shape == (4, NUM_ITEMS + 1)
    assert torch.equal(scores[0], torch.tensor(counts, dtype=torch.float32))
    result = fit(model, cycles, FAST, progress=False)  # nothing to train: evaluated once
    assert result.best_epoch == 0 and result.stop_reason == "untrainable"
    assert result.best_valid["HR@1"] < 0.3


# ---- learning ---------------------------------------------------------------------------------
# BERT4Rec learns from ~1.5 masked items per sequence where SASRec learns from every position, so
# it needs more epochs (and a gentler learning rate) for the same task.
SLOW = TrainConfig(epochs=60, batch_size=32, lr=2e-3, max_len=MAX_LEN, patience=0)


@pytest.mark.parametrize("make, cfg", [(small_sasrec, FAST), (small_bert, SLOW)], ids=["sasrec", "bert4rec"])
def test_sequential_models_learn_next_equals_current_plus_one(cycles, make, cfg):
    model = make()
    result = fit(model, cycles, cfg, progress=False)
    test = evaluate_split(model, cycles, "test")
    assert test.metrics["HR@1"] > 0.95, (model.name, result.history[-1])
    assert result.best_valid["HR@1"] > 0.95
    popularity = evaluate_split(Popularity.from_split(cycles), cycles, "test")
    assert popularity.metrics["HR@1"] < 0.3
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0]


def test_same_seed_gives_the_same_loss_curve(cycles):
    cfg = TrainConfig(epochs=2, batch_size=32, lr=5e-3, max_len=MAX_LEN, seed=3)
    a, b = small_bert(seed=1), small_bert(seed=1)
    ra, rb = fit(a, cycles, cfg, progress=False), fit(b, cycles, cfg, progress=False)
    assert [h["train_loss"] for h in ra.history] == [h["train_loss"] for h in rb.history]
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    rc = fit(small_bert(seed=1), cycles, TrainConfig(**{**cfg.__dict__, "seed": 4}), progress=False)
    assert [h["train_loss"] for h in rc.history] != [h["train_loss"] for h in ra.history]


def test_fit_leaves_the_callers_rng_alone(cycles):
    model = small_sasrec()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    fit(model, cycles, TrainConfig(epochs=1, batch_size=64, max_len=MAX_LEN), progress=False)
    assert torch.equal(torch.rand(3), expected)


class Scripted(SequentialRecommender):
    """A 'model' whose item scores follow a script per epoch (one batch = one epoch): good at epoch 2 only."""

    name = "scripted"

    def __init__(self, num_items: int, good_item: int):
        super().__init__()
        self.num_items, self.good_item = num_items, good_item
        self.table = torch.nn.Parameter(torch.zeros(num_items + 1))
        self.calls = 0

    def loss(self, sequences, generator=None):
        self.calls += 1
        with torch.no_grad():
            self.table.zero_()
            self.table[self.good_item if self.calls == 2 else self.num_items] = 1.0
        return LossOutput((self.table * 0.0).sum(), {"calls": float(self.calls)})  # zero grad: Adam leaves it

    def score_all(self, histories):
        return self.table.detach().unsqueeze(0).expand(histories.shape[0], -1).clone()


def test_early_stopping_restores_the_best_weights():
    seqs = [np.array([5, 6, 7, 1, 9]) for _ in range(8)]  # every validation target is item 1
    split = make_split(seqs)
    model = Scripted(NUM_ITEMS, good_item=1)
    result = fit(model, split, TrainConfig(epochs=20, batch_size=64, max_len=MAX_LEN, patience=3), progress=False)
    assert result.best_epoch == 2
    assert result.stop_reason == "patience"
    assert len(result.history) == 2 + 3
    assert result.history[1]["valid"]["HR@1"] == 1.0 and result.history[-1]["valid"]["HR@1"] == 0.0
    assert int(model.table.argmax()) == 1  # the epoch-2 weights are back
    assert evaluate_split(model, split, "valid").metrics["HR@1"] == 1.0


def test_eval_every_and_time_limit():
    split = make_split([np.array([5, 6, 7, 1, 9]) for _ in range(8)])
    result = fit(Scripted(NUM_ITEMS, 1), split, TrainConfig(epochs=5, batch_size=64, max_len=MAX_LEN,
                                                            eval_every=2, patience=0), progress=False)
    assert [h["valid"] is not None for h in result.history] == [False, True, False, True, True]
    limited = fit(Scripted(NUM_ITEMS, 1), split, TrainConfig(epochs=50, batch_size=64, max_len=MAX_LEN,
                                                             time_limit_s=1e-9), progress=False)
    assert limited.stop_reason == "time_limit" and len(limited.history) == 1
    assert limited.history[0]["valid"] is not None  # the last epoch is always validated


def test_make_batches_cover_every_sequence_once():
    lengths = np.random.default_rng(0).integers(1, 50, size=1000)
    for buckets in (False, True):
        cfg = TrainConfig(batch_size=64, length_buckets=buckets, bucket_pool=4)
        batches = make_batches(lengths, cfg, np.random.default_rng(1))
        assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
        assert max(len(b) for b in batches) == 64


def test_fit_per_seed_then_test_results_make_a_table(cycles):
    """One fit per seed (run_experiment's seed loop), each best model scored on test, tabulated mean ± std."""
    from qbert4rec_lib.config import seed_everything

    fits, tests = [], []
    for seed in (0, 1):
        seed_everything(seed)
        model = small_sasrec()
        fits.append(fit(model, cycles, TrainConfig(epochs=1, batch_size=64, max_len=MAX_LEN, seed=seed), progress=False))
        tests.append(evaluate_split(model, cycles, "test", EvalConfig()))
    assert all(t.protocol.endswith("test split") for t in tests) and all(f.best_epoch == 1 for f in fits)
    assert fits[0].history[0]["train_loss"] != fits[1].history[0]["train_loss"]
    table = results_table({"SASRec-CE": tests})
    assert "± " in table and "| 2 |" in table


def test_trainer_rejects_bad_config():
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(KeyError, match="monitor"):
        fit(small_sasrec(), make_split([np.array([1, 2, 3, 4, 5])] * 4),
            TrainConfig(epochs=1, max_len=MAX_LEN, monitor="NDCG@7"), progress=False, eval_cfg=EvalConfig())


class _Interrupt(Exception):
    pass


@pytest.mark.parametrize("make", [small_sasrec, small_bert])
def test_an_interrupted_fit_resumes_to_the_same_result(cycles, make, tmp_path):
    """Killed after epoch 3, restarted with the same checkpoint folder: the same curve and weights as one run."""
    cfg = TrainConfig(epochs=6, batch_size=32, lr=5e-3, max_len=MAX_LEN, patience=0, eval_every=2)
    straight = make()
    whole = fit(straight, cycles, cfg, progress=False)

    def crash_after_3(entry):
        if entry["epoch"] == 3:
            raise _Interrupt

    first = make()
    with pytest.raises(_Interrupt):
        fit(first, cycles, cfg, progress=False, log=crash_after_3, checkpoint_dir=tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "state.safetensors").is_file()
    ran = []
    resumed = fit(make(), cycles, cfg, progress=False, log=ran.append, checkpoint_dir=tmp_path / "ckpt")
    assert [e["epoch"] for e in ran] == [4, 5, 6]  # epochs 1-3 were not trained again
    assert [e["train_loss"] for e in resumed.history] == [e["train_loss"] for e in whole.history]
    assert resumed.best_epoch == whole.best_epoch and resumed.best_valid == whole.best_valid
    # the epoch log after a resume reports fit's best, which counts the epochs before the interruption
    assert ran[-1]["best"] == {"score": whole.best_valid["NDCG@10"], "epoch": whole.best_epoch}
    assert "best" not in resumed.history[-1]  # the stored curve is unchanged
    ran.clear()
    again = fit(make(), cycles, cfg, progress=False, log=ran.append, checkpoint_dir=tmp_path / "ckpt")
    assert ran == [] and [e["train_loss"] for e in again.history] == [e["train_loss"] for e in whole.history]
    # another config ignores the checkpoint; a damaged one is an error naming the folder
    other = fit(make(), cycles, TrainConfig(**{**cfg.__dict__, "epochs": 2}), progress=False,
                checkpoint_dir=tmp_path / "ckpt")
    assert len(other.history) == 2
    (tmp_path / "ckpt" / "state.safetensors").write_bytes(b"broken")
    with pytest.raises(ValueError, match="ckpt"):
        fit(make(), cycles, TrainConfig(**{**cfg.__dict__, "epochs": 2}), progress=False, checkpoint_dir=tmp_path / "ckpt")
