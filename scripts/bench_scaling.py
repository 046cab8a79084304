"""Benchmark: how training, full-ranking evaluation, memory, stage 2 and beam search scale with the catalog (CPU).

    .venv/bin/python scripts/bench_scaling.py                      # 1k .. 200k items, writes the outputs below
    .venv/bin/python scripts/bench_scaling.py --sizes 1000 10000   # a quick look

Writes ``figures/results/scaling.json``, ``figures/results/scaling.md`` and ``figures/scaling.png`` (log-log).

What is measured, per catalog size ``N`` (users ``U = 2 N``, capped by ``--max-users``):

* **Data**: a fast vectorised generator (the kit's ``synthetic`` module simulates users one item at a time over
  all ``N`` items: hours at 200k). Items sit in fine clusters of ~20 items inside up to 256 coarse clusters; the
  next item is from the previous item's fine cluster (p 0.4), its coarse cluster (p 0.3) or Zipf popularity.
  Sequence lengths 5 + lognormal (median 3), at most 50. Q-Bert4Rec reads **oracle semantic IDs** built from the
  clusters (coarse, fine, index), i.e. what a good stage 1-2 would give; its speed does not depend on the IDs.
* **Training** (Q-Bert4Rec with the default token-MLP head, SASRec-CE, BERT4Rec-ID; hidden 64, 2 layers, batch
  256, full softmax = the defaults): the mean time of ``--steps`` optimiser steps after 2 warm-up steps (the loop of
  ``train.fit``), **extrapolated** to one epoch (``ceil(U / 256)`` steps).
* **Evaluation**: full ranking (``evaluate``, history excluded) of ``--eval-users`` test users, **extrapolated**
  linearly to all ``U`` users (evaluation is a loop over equal batches of users).
* **Peak memory**: each (size, model) runs in its own process; peak RSS (``ru_maxrss``) of that process, which
  includes the data, the model, training steps and evaluation.
* **Stage 2**: the RQ-VAE (``train_rqvae``: 3 levels x 256 codes, k-means initialisation with ``kmeans_iters=20``,
  ``--rq-epochs`` epochs) on random 128-d item vectors, total time.
* **Stage 1** (fusion, ``train_fusion`` with the default :class:`~qbert4rec_lib.semantic.fusion.FusionConfig`,
  ``--fusion-epochs`` epochs, the time per epoch reported): on random inputs shaped like the kit's encoders' output
  for every item -- text 384-d (MiniLM), image 64-d (catalog CLIP), structural 64-d (PPMI-SVD), one vector each,
  a fifth of the images missing. Its cost depends on the shapes only; these vectors are a timing load, never
  features of anything. What stage 1 needs first -- encoding every item's text and image -- is not timed here (the
  generator has no item text): ``scripts/bench_features.py`` measures the encoders' items/s.
  ``--stages-only`` re-measures stages 1-2 and keeps the rest of an existing result.
* **Beam search vs exact** (smallest and largest size): Q-Bert4Rec with the ``level_sum`` head (its per-level
  log-probs are what the beam scores) trained briefly (``--beam-train-steps`` steps with the sampled softmax,
  1024 uniform negatives — a quick model, not a converged one), then test NDCG@10 and time on ``--eval-users``
  users: exact full ranking vs :func:`qbert4rec_lib.experiments.retrieval.evaluate_beam` at several widths.

Run on 1 thread (``--threads 1``, the default): on the shared 2-core machine more threads are slower.
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODELS = ("Q-Bert4Rec", "SASRec-CE", "BERT4Rec-ID")
MAX_LEN = 50
BATCH = 256


# ---- data -----------------------------------------------------------------------------------------------------
def generate(num_items: int, num_users: int, seed: int = 0):
    """Sequences (list of int64 arrays, ids 1..N) and oracle semantic IDs [N, 3] (see the module doc)."""
    rng = np.random.default_rng(seed)
    per_fine = 20
    n_fine = max(1, num_items // per_fine)
    n_coarse = min(256, max(1, n_fine // 4))
    fine_of = np.sort(rng.integers(0, n_fine, num_items))  # items grouped by fine cluster
    coarse_of_fine = np.sort(rng.integers(0, n_coarse, n_fine))
    starts = np.searchsorted(fine_of, np.arange(n_fine))
    sizes = np.searchsorted(fine_of, np.arange(n_fine), side="right") - starts
    fine_by_coarse_start = np.searchsorted(coarse_of_fine, np.arange(n_coarse))
    fine_by_coarse_size = np.searchsorted(coarse_of_fine, np.arange(n_coarse), side="right") - fine_by_coarse_start
    pop = (rng.permutation(num_items) + 1.0) ** -0.8
    cum = np.cumsum(pop / pop.sum())
    lengths = np.minimum(MAX_LEN, 5 + np.floor(rng.lognormal(np.log(3.0), 1.0, num_users)).astype(int))
    seqs = np.zeros((num_users, lengths.max()), dtype=np.int64)
    cur = np.minimum(np.searchsorted(cum, rng.random(num_users)), num_items - 1)
    seqs[:, 0] = cur
    for t in range(1, lengths.max()):
        r = rng.random(num_users)
        nxt = np.minimum(np.searchsorted(cum, rng.random(num_users)), num_items - 1)
        f = fine_of[cur]
        ok_f = sizes[f] > 0
        same_fine = starts[f] + (rng.random(num_users) * np.maximum(sizes[f], 1)).astype(int)
        c = coarse_of_fine[f]
        fine_pick = fine_by_coarse_start[c] + (rng.random(num_users) * np.maximum(fine_by_coarse_size[c], 1)).astype(int)
        same_coarse = starts[fine_pick] + (rng.random(num_users) * np.maximum(sizes[fine_pick], 1)).astype(int)
        nxt = np.where((r < 0.4) & ok_f, same_fine, np.where((r < 0.7) & (sizes[fine_pick] > 0), same_coarse, nxt))
        cur = np.minimum(nxt, num_items - 1)
        seqs[:, t] = cur
    sequences = [seqs[u, : lengths[u]] + 1 for u in range(num_users)]
    index = np.zeros(num_items, dtype=np.int64)
    for f in range(n_fine):
        index[starts[f]: starts[f] + sizes[f]] = np.arange(sizes[f])
    fine_in_coarse = np.arange(n_fine) - fine_by_coarse_start[coarse_of_fine]
    ids = np.stack([coarse_of_fine[fine_of], fine_in_coarse[fine_of], index], axis=1)
    return sequences, ids


def make_split(sequences, num_items: int):
    from qbert4rec_lib.data.dataset import LeaveOneOutSplit

    cut = lambda a: a[-MAX_LEN:]  # noqa: E731
    return LeaveOneOutSplit([cut(s[:-2]) for s in sequences], [cut(s[:-2]) for s in sequences],
                            np.array([s[-2] for s in sequences]), [cut(s[:-1]) for s in sequences],
                            np.array([s[-1] for s in sequences]), num_items, MAX_LEN)


def save_data(path: Path, sequences, ids) -> None:
    np.savez(path, flat=np.concatenate(sequences), offsets=np.cumsum([0] + [len(s) for s in sequences]), ids=ids)


def load_data(path: Path):
    d = np.load(path)
    flat, off = d["flat"], d["offsets"]
    return [flat[off[i]: off[i + 1]] for i in range(len(off) - 1)], d["ids"]


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


# ---- one (size, model) measurement, in its own process ------------------------------------------------------
def build(name: str, num_items: int, ids, **qbert):
    import torch

    from qbert4rec_lib.models.baselines import BERT4RecID, SASRec
    from qbert4rec_lib.models.qbert import QBert4Rec, QBertConfig

    torch.manual_seed(0)
    if name == "Q-Bert4Rec":
        return QBert4Rec(ids, config=QBertConfig(max_len=MAX_LEN, **qbert))
    if name == "SASRec-CE":
        return SASRec(num_items)
    return BERT4RecID(num_items)


def train_steps(model, split, steps: int, lr: float = 2e-3, seed: int = 0) -> list[float]:
    """The inner loop of ``train.fit``; returns each step's seconds."""
    import torch

    from qbert4rec_lib.models.base import pad_left
    from qbert4rec_lib.experiments.train import TrainConfig, make_batches

    seqs = [np.asarray(s[-MAX_LEN:], dtype=np.int64) for s in split.train]
    lengths = np.array([len(s) for s in seqs])
    order = make_batches(lengths, TrainConfig(batch_size=BATCH, seed=seed), np.random.default_rng(seed))
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    times = []
    for k in range(steps):
        index = order[k % len(order)]
        t0 = time.perf_counter()
        batch = pad_left([seqs[i] for i in index], max(1, int(lengths[index].max())))
        out = model.loss(batch, gen)
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        times.append(time.perf_counter() - t0)
    model.eval()
    return times


def sample_users(split, n: int, seed: int = 1) -> np.ndarray:
    return np.sort(np.random.default_rng(seed).choice(split.num_users, min(n, split.num_users), replace=False))


def worker(args) -> None:
    import torch

    from qbert4rec_lib.experiments.evaluate import EvalConfig, evaluate

    torch.set_num_threads(args.threads)
    sequences, ids = load_data(Path(args.data))
    num_items = len(ids)
    split = make_split(sequences, num_items)
    model = build(args.model, num_items, ids)
    times = train_steps(model, split, args.steps + 2)[2:]
    step_s = float(np.mean(times))
    steps_per_epoch = math.ceil(split.num_users / BATCH)
    users = sample_users(split, args.eval_users)
    res = evaluate(model, [split.test_history[u] for u in users], split.test_target[users], num_items, EvalConfig(),
                   max_len=MAX_LEN)
    print(json.dumps({"items": num_items, "users": split.num_users, "model": args.model, "step_s": step_s,
                      "steps_timed": len(times), "steps_per_epoch": steps_per_epoch, "epoch_s": step_s * steps_per_epoch,
                      "eval_users_timed": len(users), "eval_s_sample": res.seconds,
                      "eval_s": res.seconds * split.num_users / len(users), "peak_rss_gib": peak_rss_gib()}))


def beam_worker(args) -> None:
    import torch

    from dataclasses import replace

    from qbert4rec_lib.experiments.evaluate import EvalConfig, evaluate
    from qbert4rec_lib.experiments.retrieval import PrefixTrie, evaluate_beam

    torch.set_num_threads(args.threads)
    sequences, ids = load_data(Path(args.data))
    num_items = len(ids)
    split = make_split(sequences, num_items)
    model = build("Q-Bert4Rec", num_items, ids, item_head="level_sum", item_loss="sampled", loss_negatives=1024)
    from qbert4rec_lib.models.masking import FINETUNE_MASKS

    model.masking = FINETUNE_MASKS
    t0 = time.perf_counter()
    train_steps(model, split, args.beam_train_steps, lr=3e-3)
    train_s = time.perf_counter() - t0
    model.config = replace(model.config, item_loss="full")
    users = sample_users(split, args.eval_users)
    hist, targets = [split.test_history[u] for u in users], split.test_target[users]
    exact = evaluate(model, hist, targets, num_items, EvalConfig(), max_len=MAX_LEN)
    t0 = time.perf_counter()
    trie = PrefixTrie.from_model(model)
    trie_s = time.perf_counter() - t0
    rows = [{"method": "exact full ranking", "beam": None, "seconds": exact.seconds, "NDCG@10": exact.metrics["NDCG@10"],
             "HR@10": exact.metrics["HR@10"]}]
    for width in args.beams:
        res = evaluate_beam(model, hist, targets, num_items, EvalConfig(), beam_width=width, trie=trie)
        rows.append({"method": f"beam {width}", "beam": width, "seconds": res.seconds, "NDCG@10": res.metrics["NDCG@10"],
                     "HR@10": res.metrics["HR@10"], "missed": float((res.ranks == num_items + 1).mean())})
    print(json.dumps({"items": num_items, "users_evaluated": len(users), "train_steps": args.beam_train_steps,
                      "train_s": train_s, "trie_s": trie_s, "trie_levels": trie.level_sizes(), "rows": rows,
                      "peak_rss_gib": peak_rss_gib()}))


def rq_worker(args) -> None:
    import torch

    from qbert4rec_lib.semantic.quantize import RQVAEConfig, train_rqvae

    torch.set_num_threads(args.threads)
    n = args.items
    x = np.random.default_rng(0).standard_normal((n, 128)).astype(np.float32)
    t0 = time.perf_counter()
    train_rqvae(x, RQVAEConfig(epochs=args.rq_epochs, kmeans_iters=20), progress=False)
    print(json.dumps({"items": n, "rqvae_s": time.perf_counter() - t0, "rq_epochs": args.rq_epochs,
                      "peak_rss_gib": peak_rss_gib()}))


def fusion_worker(args) -> None:
    import torch

    from qbert4rec_lib.semantic.features import FeatureSet, ModalityFeatures
    from qbert4rec_lib.semantic.fusion import FusionConfig, train_fusion

    torch.set_num_threads(args.threads)
    n, rng = args.items, np.random.default_rng(0)
    mods = {}
    for name, dim, missing in (("text", 384, 0.0), ("image", 64, 0.2), ("structural", 64, 0.0)):
        present = rng.random(n) >= missing
        vectors = rng.standard_normal((n, 1, dim)).astype(np.float32) * present[:, None, None]
        mods[name] = ModalityFeatures(name=name, vectors=vectors, present=present, meta={"dim": dim})
    features = FeatureSet(dataset_fingerprint=f"timing-load-{n}", modalities=mods, absent={})
    t0 = time.perf_counter()
    train_fusion(features, FusionConfig(epochs=args.fusion_epochs), progress=False, threads=args.threads)
    total = time.perf_counter() - t0
    print(json.dumps({"items": n, "fusion_s": total, "fusion_epoch_s": total / args.fusion_epochs,
                      "fusion_epochs": args.fusion_epochs, "default_epochs": FusionConfig().epochs,
                      "peak_rss_gib": peak_rss_gib()}))


# ---- the driver -------------------------------------------------------------------------------------------------
def run_child(extra: list[str], args, timeout: float) -> dict | None:
    cmd = [sys.executable, __file__, "--threads", str(args.threads), "--steps", str(args.steps), "--eval-users",
           str(args.eval_users), "--beam-train-steps", str(args.beam_train_steps), "--rq-epochs", str(args.rq_epochs),
           "--fusion-epochs", str(args.fusion_epochs), "--beams", *map(str, args.beams), *extra]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"  (skipped: over {timeout:.0f} s)", flush=True)
        return {"skipped": f"over the {timeout:.0f} s budget"}
    if out.returncode != 0:
        print(out.stderr[-2000:], flush=True)
        return {"skipped": f"failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def dominant(row: dict) -> str:
    """Which term of a model's cost at this size is largest (from the measured parts)."""
    return "training epoch" if row["epoch_s"] >= row["eval_s"] else "full-ranking evaluation"


def table(result: dict) -> str:
    lines = ["| items | users | model | train step (s) | epoch (s, extrapolated) | full-ranking eval, all users (s, extrapolated) "
             "| peak RSS (GiB) | larger term |", "|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        if "skipped" in r:
            lines.append(f"| {r['items']:,} | – | {r['model']} | – | – | – | – | skipped: {r['skipped']} |")
            continue
        lines.append(f"| {r['items']:,} | {r['users']:,} | {r['model']} | {r['step_s']:.3f} | {r['epoch_s']:.1f} | "
                     f"{r['eval_s']:.1f} | {r['peak_rss_gib']:.2f} | {dominant(r)} |")
    fusion = {r["items"]: r for r in result.get("fusion", [])}
    lines += ["", "| items | stage 1 (fusion): one epoch (s) | stage 1, default epochs (s, extrapolated) "
              "| RQ-VAE (stage 2) total (s) |", "|---|---|---|---|"]
    for r in result["rqvae"]:
        f = fusion.get(r["items"], {"skipped": "not measured"})
        cells = ([f"{f['fusion_epoch_s']:.1f}", f"{f['fusion_epoch_s'] * f['default_epochs']:.0f}"]
                 if "fusion_epoch_s" in f else [f"skipped: {f['skipped']}", "–"])
        lines.append(f"| {r['items']:,} | " + " | ".join(cells) + " | "
                     + (f"{r['rqvae_s']:.1f}" if "rqvae_s" in r else f"skipped: {r['skipped']}") + " |")
    for b in result["beam"]:
        if "rows" not in b:
            continue
        lines += ["", f"Beam search vs exact, {b['items']:,} items (Q-Bert4Rec level_sum head, {b['train_steps']} sampled-"
                  f"softmax steps in {b['train_s']:.0f} s; {b['users_evaluated']:,} test users; prefix-tree nodes per "
                  f"level {b['trie_levels']}):", "",
                  "| method | seconds | × faster than exact | NDCG@10 | HR@10 | targets not retrieved |", "|---|---|---|---|---|---|"]
        exact = b["rows"][0]
        for r in b["rows"]:
            lines.append(f"| {r['method']} | {r['seconds']:.2f} | {exact['seconds'] / r['seconds']:.1f} | {r['NDCG@10']:.4f} | "
                         f"{r['HR@10']:.4f} | {r.get('missed', 0.0):.1%} |")
    return "\n".join(lines) + "\n"


def figure(result: dict, path: Path) -> None:
    """Log-log panels (plotly, the kit's figure style; HTML always, PNG when a browser is available)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from qbert4rec_lib.kit.viz import save_figure

    titles = ("training: one epoch (s, extrapolated)", "full-ranking evaluation, all users (s, extrapolated)",
              "peak RSS (GiB)")
    fig = make_subplots(rows=1, cols=3, subplot_titles=titles)
    colours = {"Q-Bert4Rec": "#1f77b4", "SASRec-CE": "#d62728", "BERT4Rec-ID": "#2ca02c"}
    for model in MODELS:
        rows = [r for r in result["runs"] if r["model"] == model and "skipped" not in r]
        n = [r["items"] for r in rows]
        for col, key in ((1, "epoch_s"), (2, "eval_s"), (3, "peak_rss_gib")):
            fig.add_trace(go.Scatter(x=n, y=[r[key] for r in rows], mode="lines+markers", name=model,
                                     line=dict(color=colours[model]), legendgroup=model, showlegend=col == 1),
                          row=1, col=col)
    rq = [r for r in result["rqvae"] if "rqvae_s" in r]
    if rq:
        fig.add_trace(go.Scatter(x=[r["items"] for r in rq], y=[r["rqvae_s"] for r in rq], mode="lines+markers",
                                 name="RQ-VAE (stage 2, total)", line=dict(color="grey", dash="dash")), row=1, col=1)
    fu = [r for r in result.get("fusion", []) if "fusion_epoch_s" in r]
    if fu:
        fig.add_trace(go.Scatter(x=[r["items"] for r in fu], y=[r["fusion_epoch_s"] for r in fu], mode="lines+markers",
                                 name="fusion (stage 1, one epoch)", line=dict(color="black", dash="dot")), row=1, col=1)
    fig.update_xaxes(type="log", title_text="items (users = 2 x items)")
    fig.update_yaxes(type="log")
    fig.update_layout(title=f"Scaling on CPU, {result['threads']} thread(s)", template="plotly_white",
                      legend=dict(orientation="h", y=-0.25))
    paths = save_figure(fig, path.stem, path.parent, width=1400, height=480)
    print(f"figure: {', '.join(str(p) for p in paths.values())}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="*", type=int, default=[1000, 10000, 50000, 200000])
    parser.add_argument("--max-users", type=int, default=400_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=6, help="timed training steps per (size, model), after 2 warm-up")
    parser.add_argument("--eval-users", type=int, default=2048, help="users evaluated (extrapolated to all)")
    parser.add_argument("--beam-train-steps", type=int, default=300)
    parser.add_argument("--beams", nargs="*", type=int, default=[10, 50, 200])
    parser.add_argument("--rq-epochs", type=int, default=2)
    parser.add_argument("--fusion-epochs", type=int, default=1)
    parser.add_argument("--stages-only", action="store_true",
                        help="measure stages 1-2 only; the sequence-model rows come from the existing --out .json")
    parser.add_argument("--budget-s", type=float, default=420, help="per child process; slower ones are skipped")
    parser.add_argument("--out", default=str(REPO / "figures" / "results" / "scaling"))
    parser.add_argument("--figure", default=str(REPO / "figures" / "scaling.png"))
    # internal: one measurement in a child process
    parser.add_argument("--worker", choices=["train", "beam", "rq", "fusion"], default=None)
    parser.add_argument("--data", default=None)
    parser.add_argument("--model", default=None)
    parser.add_argument("--items", type=int, default=0)
    args = parser.parse_args()
    if args.worker:
        {"train": worker, "beam": beam_worker, "rq": rq_worker, "fusion": fusion_worker}[args.worker](args)
        return
    import platform

    import torch

    machine = f"{platform.processor() or platform.machine()}, torch {torch.__version__}"
    result = {"threads": args.threads, "machine": machine, "steps_timed": args.steps, "eval_users": args.eval_users,
              "runs": [], "rqvae": [], "fusion": [], "beam": [], "notes": __doc__}
    out = Path(args.out)
    start = time.perf_counter()
    if args.stages_only:  # the sequence-model rows of the earlier run stay; stages 1-2 are measured again
        earlier = json.loads(out.with_suffix(".json").read_text(encoding="utf-8"))
        result = {**earlier, "rqvae": [], "fusion": [], "notes": __doc__,
                  "stages_machine": machine, "stages_measured": time.strftime("%Y-%m-%d")}
        for n in args.sizes:
            for kind, key in (("fusion", "fusion"), ("rq", "rqvae")):
                row = run_child(["--worker", kind, "--items", str(n)], args, args.budget_s)
                result[key].append({"items": n, **row})
                print(f"  {n:,} items, {key}: {json.dumps(row)}", flush=True)
        args.sizes = []  # nothing else to measure
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            users = min(2 * n, args.max_users)
            t0 = time.perf_counter()
            sequences, ids = generate(n, users)
            path = Path(tmp) / f"data_{n}.npz"
            save_data(path, sequences, ids)
            print(f"{n:,} items, {users:,} users, {sum(map(len, sequences)):,} interactions: generated in "
                  f"{time.perf_counter() - t0:.1f} s", flush=True)
            for model in MODELS:
                row = run_child(["--worker", "train", "--data", str(path), "--model", model], args, args.budget_s)
                row = {"items": n, "model": model, **row}
                result["runs"].append(row)
                print(f"  {model}: {json.dumps(row)}", flush=True)
            rq = run_child(["--worker", "rq", "--items", str(n)], args, args.budget_s)
            result["rqvae"].append({"items": n, **rq})
            print(f"  RQ-VAE: {json.dumps(rq)}", flush=True)
            fu = run_child(["--worker", "fusion", "--items", str(n)], args, args.budget_s)
            result["fusion"].append({"items": n, **fu})
            print(f"  fusion: {json.dumps(fu)}", flush=True)
            if n in (min(args.sizes), max(args.sizes)):
                beam = run_child(["--worker", "beam", "--data", str(path)], args, args.budget_s * 1.5)
                result["beam"].append({"items": n, **beam})
                print(f"  beam: {json.dumps(beam)}", flush=True)
    result["seconds" if not args.stages_only else "stages_seconds"] = time.perf_counter() - start
    md = table(result)
    notes = ("\nTraining: mean of {s} timed steps (batch 256, after 2 warm-up steps) x steps per epoch; evaluation: "
             "{e} sampled test users, time scaled to all users; each (size, model) in its own process (peak RSS = "
             "that process). Models at their defaults (hidden 64, 2 layers, full softmax). Q-Bert4Rec reads oracle "
             "cluster IDs. 1 torch thread. Whole run {t:.0f} s.\n").format(s=args.steps, e=args.eval_users, t=result["seconds"])
    if result.get("stages_measured"):
        notes += (f"\nStages 1-2 measured again on {result['stages_measured']} ({result['stages_machine']}, "
                  f"{result['stages_seconds']:.0f} s): stage 1 = `train_fusion` (default FusionConfig) on random "
                  "inputs shaped like the encoders' output (text 384-d, image 64-d with a fifth missing, structural "
                  "64-d), a timing load only; the encoders themselves are not timed here.\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(REPO))
    from qbert4rec_lib.atomic import atomic_write_text
    from qbert4rec_lib.keys import _jsonable

    atomic_write_text(out.with_suffix(".json"), json.dumps(_jsonable(result, finite=True), indent=2) + "\n")
    atomic_write_text(out.with_suffix(".md"), "# Scaling benchmark (`scripts/bench_scaling.py`)\n\n" + md + notes)
    figure(result, Path(args.figure))
    print("\n" + md + notes)


if __name__ == "__main__":
    main()
