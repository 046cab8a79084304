"""Every notebook executed through papermill, its recorded figures asserted.

The notebooks run once, as the README's main command runs them (several at a time, in numbered order, in one
shared output folder and one shared cache, so later notebooks reuse -- or wait for -- the features / semantic IDs /
models of earlier ones). Each notebook records its key numbers with ``Recorder``; the checks below assert them within
tolerances (the way recommenders-team/recommenders tests its notebooks, with small parameters). Timings, progress bars
and widget views are never compared.

Which parameter set runs: ``quick`` (default: every cell, stages 1-2 as in the smoke set, the sequence models capped
at a few epochs -- ``notebooks/params/quick.yaml``) or, with ``QBERT4REC_NOTEBOOK_SET=smoke``, the main command's
``smoke`` set (every model trained to early stopping: ~4x the CPU time). Three groups of checks:

* ``INVARIANTS`` hold whatever the training budget: data, features, stages 1-2, the references that train nothing
  (Popularity, content k-NN, the generator's oracle), saved records read from ``figures/results``;
* ``QUICK_PINS`` / ``quick_relations``: the quick run's model figures (deterministic on one CPU; windows for other
  CPUs' floating-point differences), so a change to a model, a loss, a mask or the evaluation moves them;
* ``SMOKE_PINS`` / ``smoke_relations``: the converged models' figures and the comparisons the README and the notebooks'
  prose state. They are checked on every run against the committed smoke record (``figures/results/smoke.json``,
  written by the main command: a regenerated record whose numbers break a stated comparison fails here) and on a
  fresh smoke run when ``QBERT4REC_NOTEBOOK_SET=smoke``.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from qbert4rec_lib.kit.reproduce import NotebookFailed, list_notebooks, load_param_set, notebook_parameters, run_set

NOTEBOOKS = [p.stem for p in list_notebooks()]
NOTEBOOK_SET = os.environ.get("QBERT4REC_NOTEBOOK_SET", "quick")
SMOKE_RECORD = Path(__file__).resolve().parents[1] / "figures" / "results" / "smoke.json"


def _between(lo, hi):
    return lambda v: v is not None and lo <= v <= hi


# notebook -> {recorded name: predicate}. Names missing from a notebook's record fail the test.
# Checks that hold whatever the training budget (nothing here depends on how long a sequence model trained).
INVARIANTS: dict[str, dict] = {
    "00_overview": {
        "unique_semantic_ids": lambda v: v == 1.0,
        "items": lambda v: v == 1296,  # the default catalog after its 5-core filter (deterministic)
        "popularity_ndcg10": _between(0.045, 0.052),  # deterministic given the split (0.0482)
    },
    "01_data": {
        # the generator and the 5-core filter are deterministic given the seed: a change in either moves these
        "users": lambda v: v == 2355,
        "items": lambda v: v == 1296,
        "interactions": lambda v: v == 22019,
        "items_seen_in_train": lambda v: v == 1295,  # the leave-one-out split keeps all but one item in training
        "modalities": lambda v: v["text"] is True and v["image"] is True,
        "mean_sequence_length": _between(9.3, 9.4),  # 9.35
    },
    "02_features": {
        "dims": lambda v: v["text"] == 384 and "image" in v and "structural" in v,
        "absent": lambda v: v == {} or "image" not in v,
        # every item has text and an image; structural features exist for the items seen in training (1,295)
        "items_present": lambda v: v == {"image": 1296, "structural": 1295, "text": 1296},
        # the fitted catalog CLIP sees colour (0.994 in smoke runs; chance 0.10) and beats the untrained tower on the
        # brand-family pattern (0.66 vs 0.42)
        "image_purity_untrained_vs_fitted": lambda v: v["colour"]["fitted"] >= 0.9
        and v["brand_family"]["fitted"] > v["brand_family"]["untrained"] + 0.1,
    },
    "03_fusion": {  # the smoke run of 2026-12-03: final loss 4.63, mean exit depth 1.72, fused purity 0.896
        "final_loss": _between(4.3, 5.0),
        "mean_exit_depth": _between(1.2, 2.6),  # the gate lets most items exit early (all 4 blocks = 4.0)
        "neighbour_purity": lambda v: v["fused"]["top category"] >= 0.8 > v["image"]["top category"],
    },
    "04_quantization": {
        "unique_after": lambda v: v == 1.0,
        "usage": lambda v: (v[0] if isinstance(v, list) else v) >= 0.9,
        "level1_purity_top_category": _between(0.5, 1.0),  # random assignment gives ~0.3 on this catalog
        "level1_random_top_category": _between(0.0, 0.45),
    },
    "05_pretraining": {  # the smoke run of 2026-12-03: masked shares 0.24-0.30
        "mean_masked_fraction": lambda v: set(v) == {"cloze", "mixture", "multi_region", "span", "tail"}
        and all(0.18 <= x <= 0.36 for x in v.values()),
        "strategy_loss_decreased": lambda v: all(v.values()),
    },
    "06_evaluation": {
        "popularity_ndcg10": _between(0.045, 0.052),  # deterministic given the split (0.0482)
        "protocol": lambda v: "full ranking" in v and "leave-one-out" in v,
        # per test-item popularity group (rare -> popular): Popularity can only serve the popular group, so a
        # reversed grouping or ranks matched to the wrong users fail here
        "popularity_groups_ndcg10": lambda v: set(v) == {"Q-Bert4Rec", "SASRec-CE", "BERT4Rec-ID", "Popularity"}
        and all(len(x) == len(v["Popularity"]) >= 3 for x in v.values())
        and v["Popularity"][-1] > 0.1 > v["Popularity"][0],
        # the generated catalog's ceiling and its references are deterministic (no training): 0.1828 / 0.1541 /
        # 0.1490 on 2026-12-05; a changed generator, split or ranking rule moves them
        "oracle_ndcg10": lambda v: v == pytest.approx(0.1828, abs=0.001),
        "oracle_no_taste_ndcg10": lambda v: v == pytest.approx(0.1541, abs=0.001),
        "fitted_structure_ndcg10": lambda v: v == pytest.approx(0.1490, abs=0.001),
        # the committed study records (read, not trained): the same model on the item table's category and brand
        # tokens is far above it on its learned tokens (0.1306 vs 0.0956 over 3 seeds on 2026-12-05)
        "tokens_test_ndcg10": lambda v: v["ids_metadata"] > v["default"] + 0.02,
        # the committed content-channel records (read, not trained; 3 seeds, 2026-12-06): the extension 0.1101, above
        # SASRec-CE's 0.0957 by more than the seeds' spread; another record folder or a swapped row fails here
        "content_channel_test_ndcg10": lambda v: v["content_channel"] == pytest.approx(0.1101, abs=1e-4)
        and v["content_channel"] > v["reference: SASRec-CE"] + 0.01 and v["default"] == pytest.approx(0.0965, abs=1e-3),
    },
    "07_interpretability": {
        "cold_items": lambda v: v == 129,  # 10% of 1,296 items drawn at random (deterministic split)
        "cold_users": lambda v: v == 301,
        "content_knn_cold_hr10": _between(0.015, 0.025),  # 0.0199; no training, one user moves it by 0.0033
        # ranked among the 129 new items only: chance ~0.08; k-NN 0.176
        "content_knn_new_only_hr10": _between(0.16, 0.19),
        "sasrec_cold_hr10": lambda v: v == 0.0,  # an ID model knows nothing about a new item, by construction
        # the committed Beauty run, read (not trained): new-item (cold) HR@10 per row; k-NN 0.0442 and Popularity 0
        # (it never ranks an item nobody bought), content+structure 0.0189 (the mean of seeds 0-2: 0.0198, 0.0152,
        # 0.0218) -- reading another group (warm: 0.0587), fewer seeds or another file fails here
        "beauty_saved_cold_hr10": lambda v: abs(v["Content k-NN"] - 0.0442) < 1e-4 and v["Popularity"] == 0.0
        and abs(v["Q-Bert4Rec (fused IDs, content+structure query)"] - 0.0189) < 1e-4,
        # cold users by cos(new item, last item): 82% below 0.5 (246 of 301; content vectors, no sequence training),
        # where content k-NN ranks the new item in the top 10 of the new items for 0.12; k-NN is near-perfect on the
        # few close ones (0.875 / 1.0 at 0.7 and up). A band computed on the wrong users or a cosine of the wrong items
        # fails here (the sequence model's column is checked with the model pins)
        "similarity_bands": lambda v: v[0]["band"] == [-1.0, 0.5] and 0.79 <= v[0]["share"] <= 0.84
        and abs(sum(b["share"] for b in v) - 1) < 1e-9 and 0.10 <= v[0]["Content k-NN"] <= 0.14
        and all(b["Content k-NN"] > v[0]["Content k-NN"] + 0.3 for b in v if b["band"][0] >= 0.7),
        # the generator's own probabilities on this split (no training: deterministic): 0.3156 of cold users, 0.2989
        # of warm users, 0.6744 among the new items only
        "oracle_cold_hr10": _between(0.31, 0.32),
        "oracle_warm_hr10": _between(0.29, 0.31),
        "oracle_new_only_hr10": _between(0.66, 0.69),
    },
    "08_cross_domain": {
        # popularity 0.0693 (deterministic); the zero-shot source model ranks the target near chance
        "cross_domain_test_ndcg10": lambda v: set(v) == {"popularity", "zero-shot", "scratch", "transfer", "in-domain"}
        and 0.066 <= v["popularity"] <= 0.072 and v["zero-shot"] < v["popularity"],
        "cross_domain_token_overlap": _between(0.9, 1.0),  # one shared codebook vocabulary (1.0)
        "target_items": lambda v: v == 448,  # the generated target catalog after its 5-core filter
    },
}

# The smoke set's converged models (every model trained to early stopping).
SMOKE_PINS: dict[str, dict] = {
    # the default catalog's run, the same models as notebooks 05-07 (loaded by them from the cache): Q-Bert4Rec
    # 0.0973 on the Intel and 0.0952 on the AMD machine (2026-12-05)
    "00_overview": {"qbert_ndcg10": _between(0.080, 0.105)},
    "05_pretraining": {"test_ndcg10": _between(0.080, 0.105)},  # 0.0977 on 2026-12-03
    "06_evaluation": {
        # pinned to the smoke runs of 2026-12-02/04 (Q-Bert4Rec 0.0923-0.0977, SASRec-CE 0.0960, BERT4Rec-ID
        # 0.0618 at lr 5e-4 since 2026-12-04 (0.0485-0.0512 at lr 2e-3), Popularity 0.0482; every model trained
        # to early stopping), with room for other CPUs' floating-point differences
        "q_bert4rec_ndcg10": _between(0.080, 0.105),
        "sasrec_ce_ndcg10": _between(0.085, 0.105),
        "bert4rec_id_ndcg10": _between(0.040, 0.065),
    },
    "07_interpretability": {
        # the path chosen on all users' validation NDCG@10 depends on the CPU's semantic IDs. Intel Xeon (2026-12-05):
        # content+structure, cold HR@10 0.1395 (seed 0; seeds 1-2 0.1296 / 0.1329), as high as its warm HR@10 (0.1392),
        # new items among themselves 0.34. AMD EPYC (2026-12-06): `unknown` (valid 0.0822 vs content+structure's
        # 0.0771), cold HR@10 0.0432 (29% of warm 0.1465; content+structure would give 0.1196), among new items 0.1395
        "qbert_cold_hr10": _between(0.04, 0.18),
        "qbert_warm_hr10": _between(0.12, 0.17),
        "qbert_new_only_hr10": _between(0.12, 0.45),
        # below cosine 0.5 the semantic IDs rank the new item in the top 10 of the new items more often than k-NN
        # (Intel: 0.34 vs 0.12; AMD: 0.1165 vs 0.1084)
        "similarity_bands": lambda v: v[0]["Q-Bert4Rec"] > v[0]["Content k-NN"],
    },
    "08_cross_domain": {
        # the smoke run of 2026-12-03: zero-shot 0.0113, scratch 0.1167, transfer 0.1168, in-domain 0.1009
        "cross_domain_test_ndcg10": lambda v: all(0.085 <= v[k] <= 0.14 for k in ("scratch", "transfer", "in-domain")),
    },
}


def smoke_relations(notebook: str, values: dict) -> None:
    """The comparisons the README and the notebooks' prose state for the smoke set's converged models."""
    if notebook == "06_evaluation":  # the trained sequence models must beat the popularity floor
        assert values["q_bert4rec_ndcg10"] > values["popularity_ndcg10"]
        assert values["sasrec_ce_ndcg10"] > values["popularity_ndcg10"]
        assert values["bert4rec_id_ndcg10"] > values["popularity_ndcg10"]
        # within 10% of SASRec-CE (-0.8% in the smoke runs of 2026-12-04)
        assert values["q_bert4rec_ndcg10"] > 0.9 * values["sasrec_ce_ndcg10"]
        assert values["tokens_test_ndcg10"]["default"] < values["fitted_structure_ndcg10"]
        # the paired bootstrap of the Q-Bert4Rec - SASRec-CE gap has the width 2,355 users give (-0.0070..+0.0055)
        low, high = values["qbert_minus_sasrec_ndcg10_low"], values["qbert_minus_sasrec_ndcg10_high"]
        assert 0.006 < high - low < 0.025, (low, high)
        # the semantic IDs carry the signal: shuffled across items they cost a third (0.0952 -> 0.0579)
        abl = values["ablations_ndcg10"]
        assert abl["full"] > abl["random_ids"] + 0.02, abl
    if notebook == "07_interpretability":  # new items: semantic IDs above content k-NN (full ranking), below the oracle
        assert values["qbert_cold_hr10"] > 2 * values["content_knn_cold_hr10"]  # Intel 0.1395 vs 0.0199, AMD 0.0432
        # among the new items alone the semantic IDs beat k-NN on the Intel IDs (0.34 vs 0.18) but not on the AMD IDs'
        # chosen path (0.1395 vs 0.1794): not a property of the code, so not checked
        assert values["qbert_warm_hr10"] < values["oracle_warm_hr10"]
    if notebook == "05_pretraining":  # the pretrain -> fine-tune run is far above the Popularity floor (0.095 vs 0.048)
        assert values["test_ndcg10"] > 1.5 * values["popularity_test_ndcg10"]
    if notebook == "00_overview":  # every model trained to early stopping: Q-Bert4Rec far above the Popularity floor
        assert values["qbert_ndcg10"] > 1.5 * values["popularity_ndcg10"]


def _near(value, rel: float = 0.10, abs_: float = 0.003):
    """Within ``rel`` of ``value`` (or ``abs_``, for small numbers). ``value`` may be a tuple: one value per known
    machine kind, the check passes near any of them.

    One CPU repeats the quick run exactly (two runs from empty caches, 2026-12-05). Across CPU kinds the ID models
    (SASRec-CE, BERT4Rec-ID, Popularity, content k-NN) give the same figures, but stages 1-2 build other semantic IDs
    (README, Known limitations), and a few-epoch Q-Bert4Rec moves with them by more than a floating-point window:
    on the Intel Xeon reference machine (2026-12-05) the overview's model has test NDCG@10 0.0669, on the AMD EPYC
    machine (2026-12-06) 0.0596. So every figure that depends on the semantic IDs is pinned to both machines' values
    as ``(intel, amd)``; a change of the code moves it away from both. For scale: seeds 1-2 of the overview's models
    at the quick budget give test NDCG@10 0.0671 / 0.0675 (Q-Bert4Rec, seed 0 0.0669), 0.0936 / 0.0935 (SASRec-CE,
    0.0928) and 0.0486 / 0.0494 (BERT4Rec-ID, 0.0489) on the Intel machine."""
    values = value if isinstance(value, tuple) else (value,)
    return lambda v: v is not None and any(abs(v - x) <= max(rel * abs(x), abs_) for x in values)


# The quick set's models (the sequence models capped at 15 pretraining / 5 fine-tuning / 15 baseline epochs; the
# runs of 2026-12-05 on the Intel 2-core machine, figures/results/quick.json, and of 2026-12-06 on the AMD EPYC
# 2-core machine). Not a comparison of models: regression pins of the code that trains and ranks them; a pair is
# (Intel, AMD) for the figures that depend on the CPU's semantic IDs (see _near). Notebooks 07 (301 cold users) and
# 08 (671 target users) rank few users, so their windows are wider.
QUICK_PINS: dict[str, dict] = {
    "00_overview": {"qbert_ndcg10": _near((0.0669, 0.0596))},
    "05_pretraining": {
        "test_ndcg10": _near((0.0669, 0.0596)),  # the overview's model, loaded from the cache
        "valid_ndcg10_after_pretrain": _near((0.0452, 0.0468)),
        "valid_ndcg10_after_finetune": _near((0.0592, 0.0563)),
        "strategy_valid_ndcg10": lambda v: all(_near(x)(v[k]) for k, x in {
            "cloze": (0.0368, 0.0290), "mixture": (0.0372, 0.0297), "multi_region": (0.0360, 0.0270),
            "span": (0.0376, 0.0371), "tail": (0.0329, 0.0299)}.items()),
    },
    "06_evaluation": {
        "q_bert4rec_ndcg10": _near((0.0669, 0.0596)),
        "sasrec_ce_ndcg10": _near(0.0928),  # the ID models: the same on both machines
        "bert4rec_id_ndcg10": _near(0.0489),
        "ablations_ndcg10": lambda v: _near((0.0669, 0.0596))(v["full"]) and _near((0.0495, 0.0371))(v["random_ids"]),
    },
    "07_interpretability": {
        "qbert_warm_hr10": _near((0.1120, 0.0959), rel=0.15),
        "sasrec_warm_hr10": _near(0.1553, rel=0.15),
        "qbert_new_only_hr10": _near((0.1894, 0.1296), rel=0.15),
        "qbert_cold_hr10": _near((0.0100, 0.0033), abs_=0.01),  # 3 / 1 of 301 cold users
        "similarity_bands": lambda v: _near((0.1951, 0.1165), rel=0.15)(v[0]["Q-Bert4Rec"]),
    },
    "08_cross_domain": {
        "cross_domain_test_ndcg10": lambda v: _near((0.0776, 0.0594), rel=0.15)(v["scratch"])
        and _near((0.0465, 0.0407), rel=0.15)(v["transfer"]) and _near((0.0614, 0.0585), rel=0.15)(v["in-domain"]),
        "source_test_ndcg10": _near((0.0669, 0.0632)),
    },
}


def quick_relations(notebook: str, values: dict) -> None:
    """What even a few epochs must show: a broken loss, mask or ranking would not."""
    if notebook == "05_pretraining":  # fine-tuning adds to pretraining; a few epochs already lift Q-Bert4Rec above
        assert values["valid_ndcg10_after_finetune"] > values["valid_ndcg10_after_pretrain"]  # Popularity
        assert values["test_ndcg10"] > 1.2 * values["popularity_test_ndcg10"]
    if notebook == "06_evaluation":
        assert values["sasrec_ce_ndcg10"] > values["popularity_ndcg10"] * 1.5
        abl = values["ablations_ndcg10"]  # semantic IDs above shuffled ones already after a few epochs
        assert abl["full"] > abl["random_ids"] + 0.01, abl


def _common_relations(notebook: str, values: dict) -> None:
    """Relations that hold whatever the budget."""
    if notebook == "04_quantization":
        assert values["level1_purity_top_category"] > 2 * values["level1_random_top_category"]
    if notebook == "08_cross_domain":  # the target's own Q-Bert4Rec is far above a random ranking
        assert values["cross_domain_test_ndcg10"]["in-domain"] > 3 * values["cross_domain_chance_ndcg10"]
    if notebook == "06_evaluation":
        # every model sits below the catalog's fitted structure (no training: an upper reference)
        assert max(values[k] for k in ("q_bert4rec_ndcg10", "sasrec_ce_ndcg10")) < values["fitted_structure_ndcg10"]
        # the paired bootstrap: the table's difference, inside its own interval -- a bootstrap over the wrong axis or
        # a difference of unpaired users would not be
        low, diff, high = (values[f"qbert_minus_sasrec_ndcg10{s}"] for s in ("_low", "", "_high"))
        assert diff == pytest.approx(values["q_bert4rec_ndcg10"] - values["sasrec_ce_ndcg10"], abs=1e-9)
        assert low < diff < high, (low, diff, high)
    if notebook == "07_interpretability":
        assert values["qbert_warm_hr10"] < values["oracle_warm_hr10"]


CHECKS_BY_SET = {"quick": (QUICK_PINS, quick_relations), "smoke": (SMOKE_PINS, smoke_relations)}


def check_recorded(notebook: str, values: dict, param_set: str) -> None:
    """Assert a notebook's recorded values: the invariants, the set's pins, then the relations."""
    pins, relations = CHECKS_BY_SET[param_set]
    for name, check in INVARIANTS.get(notebook, {}).items():
        assert name in values, f"{notebook} did not record {name!r} (recorded: {sorted(values)})"
        assert check(values[name]), f"{notebook}: recorded {name} = {values[name]!r} fails its check"
    for name, check in pins.get(notebook, {}).items():
        assert name in values, f"{notebook} did not record {name!r} (recorded: {sorted(values)})"
        assert check(values[name]), f"{notebook}: recorded {name} = {values[name]!r} fails its {param_set} pin"
    _common_relations(notebook, values)
    relations(notebook, values)


@pytest.fixture(scope="module")
def notebook_run(tmp_path_factory):
    """The whole parameter set executed once, as the README's main command runs it: several notebooks at once
    (``reproduce.default_jobs``) in one output folder, sharing the session's stage cache. A failing notebook stops
    the run; the tests of the notebooks that had not finished then fail with its message."""
    out = tmp_path_factory.mktemp(f"{NOTEBOOK_SET}_run")
    run = {"out": out, "figures": out / "figures", "results": out / "results", "failure": None}
    try:
        report = run_set(NOTEBOOK_SET, out_dir=out, figures_dir=run["figures"],
                         results_file=run["results"] / NOTEBOOK_SET, log=lambda *_: None)
        run["finished"] = set(report.seconds)
    except NotebookFailed as exc:
        run["failure"], run["finished"] = str(exc), set(exc.finished)
    return run


def test_every_notebook_has_one_parameters_cell_with_the_conventions():
    import nbformat

    for nb_path in list_notebooks():
        nb = nbformat.read(nb_path, as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
        assert len(tagged) == 1, f"{nb_path.name}: expected exactly one `parameters` cell, found {len(tagged)}"
        params = notebook_parameters(nb_path)
        for name in ("dataset", "seed", "figures_dir", "results_dir"):
            assert name in params, f"{nb_path.name}: parameters cell lacks {name!r}"
        assert nb.metadata["kernelspec"]["name"] == "python3", nb_path.name
        text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
        assert "By the end" in text and "## Summary" in text and "## Exercises" in text, nb_path.name
        assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), f"{nb_path.name} has committed outputs"
        raw = json.loads(nb_path.read_text(encoding="utf-8"))  # nbformat would add missing ids in memory
        assert all("id" in c for c in raw["cells"]), f"{nb_path.name}: a cell without an id (nbformat 4.5 needs one)"


@pytest.mark.parametrize("param_set", ["smoke", "quick"])
def test_parameter_set_only_names_declared_parameters(param_set):
    cfg = load_param_set(param_set)
    for nb in list_notebooks():
        extra = set(cfg["notebooks"].get(nb.stem, {}) or {}) - set(notebook_parameters(nb))
        assert not extra, f"{param_set}.yaml sets undeclared parameters {extra} for {nb.name}"


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_committed_smoke_record_passes_the_smoke_checks(notebook):
    """The README's numbers come from the main command's record: its converged figures must pass the smoke pins and
    the comparisons the prose states (a record regenerated after a change that breaks one fails here)."""
    record = json.loads(SMOKE_RECORD.read_text(encoding="utf-8"))
    assert record["param_set"] == "smoke"
    values = record["notebooks"].get(notebook)
    assert values, f"{SMOKE_RECORD.name} has no values for {notebook}"
    check_recorded(notebook, values, "smoke")


def test_the_checks_catch_plausible_regressions():
    """Each kind of regression the checks are meant to catch, applied to the committed smoke record, fails them."""
    record = json.loads(SMOKE_RECORD.read_text(encoding="utf-8"))["notebooks"]

    def fails(notebook, name, change):
        values = json.loads(json.dumps(record[notebook]))
        values[name] = change(values[name])
        with pytest.raises(AssertionError):
            check_recorded(notebook, values, "smoke")

    fails("00_overview", "qbert_ndcg10", lambda v: 0.06)  # Q-Bert4Rec trained for a few epochs only
    fails("01_data", "interactions", lambda v: v - 1)  # the generator or the k-core changed
    fails("04_quantization", "unique_after", lambda v: 0.98)  # collisions left unresolved
    fails("06_evaluation", "ablations_ndcg10", lambda v: {**v, "random_ids": v["full"]})  # IDs carry nothing
    fails("06_evaluation", "popularity_groups_ndcg10", lambda v: {k: x[::-1] for k, x in v.items()})  # groups reversed
    fails("07_interpretability", "sasrec_cold_hr10", lambda v: 0.01)  # a new item leaked into an ID model
    fails("07_interpretability", "similarity_bands",  # the two models' columns swapped
          lambda v: [{**b, "Q-Bert4Rec": b["Content k-NN"], "Content k-NN": b["Q-Bert4Rec"]} for b in v])
    fails("08_cross_domain", "cross_domain_test_ndcg10", lambda v: {**v, "zero-shot": 0.08})


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_notebook_executes_and_records_expected_figures(notebook, notebook_run):
    if notebook not in notebook_run["finished"]:
        pytest.fail(f"{notebook} did not finish: {notebook_run['failure']}")
    recorded_path = notebook_run["out"] / "results" / f"{notebook}.json"
    assert recorded_path.is_file(), f"{notebook} recorded nothing"
    values = json.loads(recorded_path.read_text())["values"]
    assert values, f"{notebook} recorded no values"
    check_recorded(notebook, values, NOTEBOOK_SET)
    executed = notebook_run["out"] / "notebooks" / f"{notebook}.ipynb"
    assert executed.is_file()
    figures = list(notebook_run["figures"].glob(f"{notebook}_*.html"))
    assert figures, f"{notebook} wrote no figure to {notebook_run['figures']}"
