"""Cold-start items done right: the protocol, the stage-1/2 path for new items, the baselines and the table.

**The protocol** (:func:`cold_start_split`). A fraction of the items is *new*: it does not exist while anything is
trained. A cold item is removed from every training sequence and from every history (validation and test), so it is

* not in the fusion stage (no ID query, not in a contrastive batch): stage 1 trains on the warm items' rows only;
* not in the structural features: the co-occurrence PPMI-SVD runs on the warm training sequences, so a cold item has
  no co-occurrence and its structural modality is absent;
* not in the RQ-VAE's training set or its k-means initialisation (stage 2 trains on the warm fused vectors);
* not in any sequence model's training softmax: ``model.train_item_mask`` (see
  :class:`~qbert4rec_lib.models.base.SequentialRecommender`) gives cold items a -inf logit in the loss of SASRec-CE,
  BERT4Rec-ID and Q-Bert4Rec, and early stopping validates on users whose validation item is warm, ranked among warm
  items only. After training the mask is lifted: the cold items "arrive".

Only the warm items' *content* encoders differ from that rule: the text encoder is pretrained (MiniLM) and the
offline image tower is a small CLIP fitted on the catalog's own (image, caption) pairs, i.e. on content, never on an
interaction (`features.fit_catalog_clip`).

Which items are cold (``by``):

* ``"time"`` (default, the realistic case: new items arrive last). The kit's datasets carry no global clock
  (``user_sequence.txt`` is per-user order only), so an interaction's time is its *relative position* in its user's
  sequence (0 = first, 1 = last: every user's sequence is taken to span the same period) and an item's arrival is its
  earliest interaction. The ``fraction`` of items arriving last are cold (ties broken by a seeded shuffle).
* ``"random"``: a seeded uniform sample of items.

Evaluation (:func:`evaluate_cold`): full ranking over **all** items (warm and cold), history excluded, pessimistic
ties, on the test targets, reported separately for *cold users* (test item cold) and *warm users*: HR@10, NDCG@10,
HR@50 and the median rank of the target (HR@10 alone hides the signal on small catalogs). Users whose *validation*
item is cold (never used for early stopping) form the cold validation set that picks the stage-1 path below.

**A new item's semantic ID** (:func:`cold_semantic_ids`) comes from its content through the *frozen* stages 1-2.
Stage 1 needs a query for an item that has no trained ID query (and it has no structural features); four paths
(``QUERY_PATHS``), and a fifth when stage 1 is trained for new items:

* ``"content"``: the mean trained query of the item's ``content_k`` nearest warm items by content (cosine of the
  concatenated, L2-normalised text and image vectors). A new item borrows the ID queries of items that look like it.
* ``"mean"``: the mean of all trained queries (the same query for every new item; only the content differs).
* ``"unknown"``: a learned "unknown item" query, fitted after stage 1 with every stage-1 weight frozen
  (:func:`~qbert4rec_lib.semantic.fusion_queries.fit_unknown_query`) to minimise the multi-view loss of the warm items when they use
  it and their structural modality is hidden, as a new item's is.
* ``"content+structure"``: the ``"content"`` query, and a structural vector imputed as the mean structural vector of
  the same content neighbours (so the item enters stage 1 with every modality a warm item has).
* ``"new_item"`` (only when stage 1 trains with ``fusion.id_dropout > 0``): the shared new-item query ``q_new`` that
  stage 1 learned by standing it in for a random share of the warm items' own queries, with their structural
  modality hidden (DropoutNet-style; ``fusion.id_consistency`` adds a term pulling each warm item's own-query and
  content-only fused vectors together). Not the paper's; measured in docs/results.md.

The path is chosen on *validation* users (:func:`run_cold_start`'s ``chosen_path``), never on test users. The
default rule (``select_by="all_users_NDCG@10"``, since 2026-12-05) is the validation NDCG@10 over **every** user,
warm and cold validation items together, the new items ranked by the path's IDs (mean over seeds): a new item's ID
serves the users who want it and costs the users who do not (ranked high where it is not wanted, it pushes a warm
target down), and only a rule that sees both kinds of user prices that in. The other rules look at the cold
validation users alone (``"median_rank"``, the default until 2026-12-05; ``"NDCG@10"``; ``"HR@50"``): a path that
lifts every new item's score wins there whatever it costs the warm users. Measured on the default catalog (seeds
0-2, Intel machine, ``figures/results/coldstart_default_2026-12-05.md``): ``content+structure``, the cold-only
rule's choice, has the best cold test HR@10 (0.074, 50% of warm) and the lowest all-user validation NDCG@10 (0.087
against 0.096 for ``content`` and ``unknown``), and costs the warm test users 0.011 HR@10 (0.149 against 0.160).
History of the cold-only rule: the median rank replaced NDCG@10 after the first 3-seed default-catalog run (NDCG@10
chose ``content``, the median rank ``content+structure``) -- a choice made after seeing those seeds' test numbers.
Warm items sent through a path land on their own level-1 code only 31-41 % of the time (the trained ID query and the
structural features shape the warm IDs; a new item has neither). Raw-text IDs (no stage 1) do not have this gap:
their new-item path is the training path.

The fused vector is quantized by the trained RQ-VAE (:func:`~qbert4rec_lib.semantic.quantize.encode_frozen`: same
standardisation, encoder and codebooks), and a cold item whose codes equal existing items' codes takes the next
disambiguation token (:func:`~qbert4rec_lib.semantic.quantize.extend_ids`); warm IDs never change. The raw-text variant
(no stage 1) quantizes the text vectors the same way. Every path's table is computed before the sequence model
trains; the model trains once (cold rows never reach its loss) and is evaluated with each path's cold rows.

**References on a generated catalog** (:data:`ORACLE_ROWS`, skipped on real data): the generator's own next-item
probabilities (:func:`~qbert4rec_lib.data.oracle.oracle_scores`), and the same with each new item's own popularity
replaced by the new items' mean (content cannot reveal an item's popularity). Ranking by the true probability is the
best ranking for every user in expectation, so the oracle bounds the *all-user* numbers; the cold users are chosen by
the outcome, and a ranking that favours new items can beat the oracle on them while the warm users pay. On the default
catalog the time split's new items are its rarest: the oracle's cold HR@10 is 8% of its warm HR@10 there, 106% on the
random split (``figures/results/coldstart_default_2026-12-05.md`` and ``coldstart_default_random.md``).

**Baselines.** SASRec-CE and BERT4Rec-ID: a cold item's embedding row is never updated (masked out of every softmax,
never an input), so it keeps its random initial value: the model knows nothing about it. Popularity: a cold item has
no training interaction, count 0, ranked last. :class:`ContentKNN`: the honest bar for cold items, no training at
all: an item's score is the cosine between its content vector and the mean content vector of the user's last ``k``
items (``k`` chosen on warm validation users).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .coldstart_ids import NEW_ITEM_PATH, QUERY_PATHS, cold_semantic_ids, content_vectors, metadata_cold_ids
from .coldstart_models import ContentKNN, _choose_k, _set_cold_rows, train_cold_model
from .coldstart_split import cold_start_split, evaluate_cold, evaluate_cold_scores

__all__ = ["MODELS", "EXTRA_MODELS", "ORACLE_ROWS", "SELECT_BY", "ColdStartReport", "run_cold_start", "choose_path", "report_from_json",
           "merge_reports",
           "cold_start_table", "run_dial", "dial_table", "dial_rows",
           "DIAL_MODELS"]

# validation metrics that can choose the stage-1 path: NDCG@10 over every user's validation item (default), or a
# metric of the cold validation users alone
SELECT_BY = ("all_users_NDCG@10", "median_rank", "NDCG@10", "HR@50")
_SELECT_LABEL = {"all_users_NDCG@10": "validation NDCG@10 over all users"} | {
    m: f"cold-validation {m.replace('_', ' ')}" for m in SELECT_BY[1:]}
# the generated catalog's reference rows (:mod:`~qbert4rec_lib.data.oracle`; skipped on other data): the generator's
# own next-item probabilities (the best expected HR@K over all users), and the same with each new item's own
# popularity replaced by the new items' mean (the best a model can do that tells new items apart by content alone)
ORACLE_ROWS = ("Oracle (generator's probabilities)", "Oracle, new items' popularity unknown")
MODELS = ("Q-Bert4Rec", "Q-Bert4Rec (raw-text IDs)", "SASRec-CE", "BERT4Rec-ID", "Content k-NN", "Popularity",
          *ORACLE_ROWS)
# rows a run can ask for beyond the default ones: the same sequence model on metadata tokens (not the paper's
# tokenizer; a new item's category and brand are known when it arrives, so its tokens are exact)
EXTRA_MODELS = ("Q-Bert4Rec (metadata tokens)", "Q-Bert4Rec + content channel")
# the kit's extension beside the IDs (QBertConfig.content_channel, not the paper's model): the fused IDs plus each
# item's frozen text+image vector through one learned projection, added to the item's input and output vectors
CONTENT_CHANNEL = "Q-Bert4Rec + content channel"
_CONTENT_ROWS = f"{CONTENT_CHANNEL} (fused IDs, "


# ---- the experiment --------------------------------------------------------------------------------
@dataclass
class ColdStartReport:
    rows: dict[str, list[dict]]  # row name -> one evaluate_cold dict per seed (plus "seed")
    protocol: str
    seeds: list[int]
    ids_info: dict  # source -> ColdIDs.info
    chosen_path: str  # the stage-1 path with the best validation ``chosen_by`` (mean over seeds)
    content_k: dict  # seed -> chosen k of the content k-NN (and the validation scores)
    seconds: float
    cold_items: list = field(default_factory=list)  # the new item ids
    split_text: str = ""  # ColdStart.describe()
    chosen_by: str = "NDCG@10"  # the cold-validation metric that chose the path (see SELECT_BY)

    def mean(self, row: str, group: str, metric: str) -> float:
        return float(np.mean([r[group][metric] for r in self.rows[row]]))

    def to_json(self) -> dict:
        agg = {row: {g: {m: {"mean": self.mean(row, g, m),
                             "std": float(np.std([r[g][m] for r in rs], ddof=1)) if len(rs) > 1 else 0.0}
                         for m in rs[0][g]} for g in ("warm", "cold", "new_only", "cold_valid", "valid_all")
                     if g in rs[0]}
               for row, rs in self.rows.items()}
        return {"protocol": self.protocol, "split": self.split_text, "cold_items": self.cold_items, "seeds": self.seeds, "chosen_path": self.chosen_path,
                "chosen_by": self.chosen_by, "mean_std": agg,
                "runs": self.rows, "ids": self.ids_info, "content_k": self.content_k, "seconds": self.seconds}

    def table(self) -> str:
        return cold_start_table(self)


def run_cold_start(dataset, cfg, *, fraction: float = 0.1, by: str = "time", seeds: Sequence[int] = (0,),
                   models: Sequence[str] = MODELS, paths: Sequence[str] | None = None, cache_root=None,
                   select_by: str = "all_users_NDCG@10", path_neighbours: int = 10, progress: bool = False,
                   log: Callable[[str], None] | None = print, epoch_log: bool = False) -> ColdStartReport:
    """The warm/cold table: every model in ``models`` under the protocol, for each seed (the split and stages 1-2
    are fixed; the seed changes the sequence models' initialisation, batches and masks). ``select_by``: the
    validation metric that chooses the stage-1 path (:data:`SELECT_BY`; default: NDCG@10 over all users).
    ``path_neighbours``: how many nearest warm items (by content) the ``content`` and ``content+structure`` paths borrow
    from (``content_k`` of :func:`~qbert4rec_lib.experiments.coldstart_ids.cold_semantic_ids`; recorded in the
    report's ``ids``). ``epoch_log``: one flushed line per training epoch of every model trained (for long runs whose
    output goes to a file)."""
    if select_by not in SELECT_BY:
        raise ValueError(f"run_cold_start: select_by={select_by!r}; expected one of {', '.join(SELECT_BY)}")
    if path_neighbours < 1:
        raise ValueError(f"run_cold_start: path_neighbours must be >= 1, got {path_neighbours}")
    from ..models.baselines import Popularity
    from ..semantic.features import build_features

    t0 = time.perf_counter()
    cs = cold_start_split(dataset, fraction, by=by, seed=0, max_len=cfg.max_len)
    say = log or (lambda _m: None)
    say(f"cold start: {cs.describe()}")
    rows: dict[str, list[dict]] = {}
    ids_info, content_k = {}, {}
    fused = cold_semantic_ids(dataset, cs, cfg, "fused", paths=paths, content_k=path_neighbours, cache_root=cache_root,
                              progress=progress) if {"Q-Bert4Rec", CONTENT_CHANNEL} & set(models) else None
    raw = cold_semantic_ids(dataset, cs, cfg, "raw_text", cache_root=cache_root, progress=progress) \
        if "Q-Bert4Rec (raw-text IDs)" in models else None
    meta = metadata_cold_ids(dataset, cs) if "Q-Bert4Rec (metadata tokens)" in models else None
    for src in (fused, raw, meta):
        if src is not None:
            ids_info[src.source] = src.info
    if fused is not None:
        ids_info["fused"] = {**fused.info, "path_neighbours": int(path_neighbours)}
    oracle = _oracle_rows(dataset, cs, [m for m in models if m in ORACLE_ROWS], say)
    vectors = None
    if {"Content k-NN", CONTENT_CHANNEL} & set(models):
        full_split = replace(cs.split, train=cs.train_full, max_len=0)
        vectors = content_vectors(build_features(dataset, cfg.features, split=full_split, cache_root=cache_root,
                                                 progress=progress))

    def train(name: str, seed: int, ids=None, what: str = "", content_channel: str = "off"):
        from .train import epoch_logger

        lines = epoch_logger(f"cold start {name}{what} seed {seed}") if epoch_log else None
        run_cfg = replace(cfg, qbert=replace(cfg.qbert, content_channel=content_channel))
        return train_cold_model(name, dataset, cs, run_cfg, seed=seed, ids=ids, cache_root=cache_root,
                                content=vectors if content_channel != "off" else None, progress=progress, log=lines)[0]

    def add(row: str, seed: int, result: dict) -> None:
        rows.setdefault(row, []).append({"seed": int(seed)} | result)
        c, w = result["cold"], result["warm"]
        say(f"{row} seed {seed}: warm HR@10 {w['HR@10']:.4f} | cold HR@10 {c['HR@10']:.4f} HR@50 {c['HR@50']:.4f} "
            f"median rank {c['median_rank']:.0f}")

    for seed in seeds:
        if fused is not None and "Q-Bert4Rec" in models:
            model = train("Q-Bert4Rec", seed, fused, " (fused IDs)")
            for path in fused.paths:
                _set_cold_rows(model, fused.tables[path])
                add(f"Q-Bert4Rec (fused IDs, {path} query)", seed, evaluate_cold(model, cs))
        if CONTENT_CHANNEL in models:
            model = train("Q-Bert4Rec", seed, fused, " + content channel", content_channel="input_output")
            for path in fused.paths:
                _set_cold_rows(model, fused.tables[path])
                add(f"{_CONTENT_ROWS}{path} query)", seed, evaluate_cold(model, cs))
        if raw is not None:
            add("Q-Bert4Rec (raw-text IDs)", seed, evaluate_cold(train("Q-Bert4Rec", seed, raw, " (raw-text IDs)"), cs))
        if meta is not None:
            add("Q-Bert4Rec (metadata tokens)", seed,
                evaluate_cold(train("Q-Bert4Rec", seed, meta, " (metadata tokens)"), cs))
        for name in ("SASRec-CE", "BERT4Rec-ID"):
            if name in models:
                add(name, seed, evaluate_cold(train(name, seed), cs))
        if "Content k-NN" in models:
            k, scores = _choose_k(vectors, cs.train_split)
            content_k[int(seed)] = {"k": k, "valid_NDCG@10": scores}
            add("Content k-NN", seed, evaluate_cold(ContentKNN(vectors, k), cs))
        if "Popularity" in models:
            add("Popularity", seed, evaluate_cold(Popularity(cs.split.train_item_counts()), cs))
        for row, result in oracle.items():  # nothing trained: the same numbers for every seed
            add(row, seed, result)
    chosen = choose_path(rows, select_by) if fused is not None else ""
    protocol = (f"{cs.describe()}. Cold items absent from stages 1-2 and every training softmax; "
                f"full ranking over all {dataset.num_items:,} items, history excluded, pessimistic ties, test split.")
    return ColdStartReport(rows, protocol, [int(s) for s in seeds], ids_info, chosen, content_k,
                           time.perf_counter() - t0, cs.cold_items.tolist(), cs.describe(), select_by)


def _oracle_rows(dataset, cs, rows: Sequence[str], say: Callable[[str], None]) -> dict[str, dict]:
    """:data:`ORACLE_ROWS` asked for, each an :func:`evaluate_cold_scores` dict; none when ``dataset`` is not a
    generated catalog (real data has no known next-item probabilities)."""
    if not rows:
        return {}
    from ..data.dataset import DataFormatError
    from ..data.oracle import generator_of, oracle_scores

    try:
        generator_of(dataset)
    except DataFormatError:
        say("cold start: not a generated catalog, so no oracle rows")
        return {}
    unknown = {ORACLE_ROWS[0]: None, ORACLE_ROWS[1]: cs.cold_items}
    return {row: evaluate_cold_scores(oracle_scores(dataset, "test", unknown_popularity=unknown[row]),
                                      oracle_scores(dataset, "valid", unknown_popularity=unknown[row]), cs)
            for row in rows}


_FUSED = "Q-Bert4Rec (fused IDs, "


def choose_path(rows: dict[str, list[dict]], select_by: str = "all_users_NDCG@10", prefix: str = _FUSED) -> str:
    """The stage-1 path whose fused-ID row has the best mean validation ``select_by`` over seeds (highest NDCG@10 over
    all users; on the cold validation users alone: lowest median rank, highest NDCG@10 / HR@50); ties go to the first
    path. Test users are never looked at. ``prefix``: whose rows (the content channel's: ``_CONTENT_ROWS``)."""
    if select_by not in SELECT_BY:
        raise ValueError(f"choose_path: select_by={select_by!r}; expected one of {', '.join(SELECT_BY)}")
    group, metric = ("valid_all", "NDCG@10") if select_by == "all_users_NDCG@10" else ("cold_valid", select_by)
    fused = {row: rs for row, rs in rows.items() if row.startswith(prefix) and rs}
    if fused and group == "valid_all" and not any(group in rs[0] for rs in fused.values()):
        raise ValueError("choose_path: these runs have no all-user validation metrics (saved before 2026-12-05); "
                         "choose by a cold-validation metric instead, e.g. select_by='median_rank'")
    sign = -1.0 if metric == "median_rank" else 1.0
    cand = {row[len(prefix):-len(" query)")]: sign * float(np.mean([r[group][metric] for r in rs]))
            for row, rs in fused.items() if group in rs[0]}
    return max(cand, key=cand.get) if cand else ""


def _table_order(rows: dict[str, list[dict]]) -> dict[str, list[dict]]:
    """Rows in the order :func:`run_cold_start` adds them (a saved JSON has them sorted by name)."""
    order = [f"{prefix}{p} query)" for prefix in (_FUSED, _CONTENT_ROWS) for p in QUERY_PATHS + (NEW_ITEM_PATH,)] + [
        "Q-Bert4Rec (raw-text IDs)", "Q-Bert4Rec (metadata tokens)", "SASRec-CE", "BERT4Rec-ID", "Content k-NN",
        "Popularity", *ORACLE_ROWS]
    rank = {row: i for i, row in enumerate(order)}
    return {row: rows[row] for row in sorted(rows, key=lambda r: (rank.get(r, len(rank)), r))}


def report_from_json(payload: dict, select_by: str | None = None) -> ColdStartReport:
    """A :class:`ColdStartReport` rebuilt from its ``to_json()`` (e.g. ``figures/results/coldstart_default.json``),
    nothing trained; with ``select_by`` the stage-1 path is chosen again by that validation metric."""
    try:
        rows, seeds = _table_order(payload["runs"]), payload["seeds"]
        by = select_by or payload.get("chosen_by", "NDCG@10")
        chosen = choose_path(rows, by) if select_by else payload["chosen_path"]
        return ColdStartReport(rows, payload["protocol"], list(seeds), payload.get("ids", {}), chosen,
                               payload.get("content_k", {}), float(payload.get("seconds", 0.0)),
                               payload.get("cold_items", []), payload.get("split", ""), by)
    except KeyError as exc:
        raise ValueError(f"cold-start results JSON: missing field {exc}") from None


def merge_reports(payloads: Sequence[dict], names: Sequence[str] | None = None,
                  select_by: str | None = None) -> ColdStartReport:
    """One :class:`ColdStartReport` from several saved runs of the *same protocol* (e.g. one process per seed, or one
    per model): each row keeps every seed any run has; a (row, seed) pair found in two runs must hold the same numbers
    (a cached model evaluated again does). The stage-1 path is chosen again over the merged rows (``select_by``, by
    default the metric the first run chose by). ``names``: how the errors name the runs (e.g. their files)."""
    if not payloads:
        raise ValueError("merge_reports: no runs to merge")
    names = list(names) if names is not None else [f"run {i + 1}" for i in range(len(payloads))]
    reports = [report_from_json(p) for p in payloads]
    first = reports[0]
    for name, r in zip(names[1:], reports[1:]):
        for field_name, what in (("protocol", "protocol"), ("cold_items", "new items")):
            if getattr(r, field_name) != getattr(first, field_name):
                raise ValueError(f"merge_reports: {name} has another {what} than {names[0]}; only runs of the same "
                                 f"protocol can be merged")
        k, k0 = (x.ids_info.get("fused", {}).get("path_neighbours", 10) for x in (r, first))
        if "fused" in r.ids_info and "fused" in first.ids_info and k != k0:
            raise ValueError(f"merge_reports: {name} gave new items fused IDs from {k} content neighbours, "
                             f"{names[0]} from {k0}; only runs of the same IDs can be merged")
    rows: dict[str, dict[int, dict]] = {}
    for name, r in zip(names, reports):
        for row, per_seed in r.rows.items():
            for entry in per_seed:
                seen = rows.setdefault(row, {}).get(int(entry["seed"]))
                if seen is not None and not _same_numbers(seen, entry):
                    raise ValueError(f"merge_reports: {name} holds other numbers for {row!r} seed {entry['seed']} "
                                     f"than an earlier run; merge runs of the same models only")
                rows[row].setdefault(int(entry["seed"]), entry)
    merged = _table_order({row: [by_seed[s] for s in sorted(by_seed)] for row, by_seed in rows.items()})
    by = select_by or first.chosen_by
    chosen = choose_path(merged, by) if any(row.startswith(_FUSED) for row in merged) else ""
    content_k, ids = {}, {}
    for r in reports:
        content_k |= {str(k): v for k, v in r.content_k.items()}
        ids |= r.ids_info
    seeds = sorted({int(s) for r in reports for s in r.seeds})
    return ColdStartReport(merged, first.protocol, seeds, ids, chosen, content_k, sum(r.seconds for r in reports),
                           first.cold_items, first.split_text, by)


def _same_numbers(a: dict, b: dict, tol: float = 1e-9) -> bool:
    """Two evaluate_cold dicts hold the same metrics (within ``tol``)."""
    if a.keys() != b.keys():
        return False
    for k in a:
        if isinstance(a[k], dict):
            if not _same_numbers(a[k], b[k], tol):
                return False
        elif isinstance(a[k], (int, float)) and isinstance(b[k], (int, float)):
            if abs(float(a[k]) - float(b[k])) > tol:
                return False
        elif a[k] != b[k]:
            return False
    return True


def cold_start_table(report: ColdStartReport) -> str:
    """Markdown: one row per model, warm-user and cold-user metrics (mean ± std over seeds); two columns rank the cold
    users' targets among the new items only (absent from runs saved before 2026-12-04), the last metric column is the
    validation NDCG@10 over all users that chooses the stage-1 path (absent before 2026-12-05)."""
    cols = [("warm", "HR@10"), ("warm", "NDCG@10"), ("warm", "HR@50"), ("cold", "HR@10"), ("cold", "NDCG@10"),
            ("cold", "HR@50"), ("cold", "median_rank"), ("new_only", "HR@10"), ("new_only", "median_rank"),
            ("valid_all", "NDCG@10")]
    label = {"warm": "warm", "cold": "cold", "new_only": "cold, among new items:", "valid_all": "valid, all users:"}
    lines = ["| model | " + " | ".join(f"{label[g]} {m.replace('median_rank', 'median rank')}" for g, m in cols)
             + " | cold / warm HR@10 | seeds |", "|---|" + "---|" * (len(cols) + 2)]
    content_path = choose_path(report.rows, report.chosen_by, prefix=_CONTENT_ROWS) if any(
        r.startswith(_CONTENT_ROWS) for r in report.rows) else ""
    marked = {f"{prefix}{path} query)" for prefix, path in ((_FUSED, report.chosen_path), (_CONTENT_ROWS, content_path))
              if path}
    for row, rs in report.rows.items():
        cells = []
        for g, m in cols:
            if any(g not in r for r in rs):
                cells.append("–")
                continue
            v = np.array([r[g][m] for r in rs])
            fmt = "{:.0f}" if m == "median_rank" else "{:.4f}"
            cells.append(fmt.format(v.mean()) + (f" ± {fmt.format(v.std(ddof=1))}" if len(v) > 1 else ""))
        warm = report.mean(row, "warm", "HR@10")
        ratio = f"{report.mean(row, 'cold', 'HR@10') / warm:.2f}" if warm > 0 else "n/a"
        mark = (f" (chosen: best {_SELECT_LABEL.get(report.chosen_by, report.chosen_by)})"
                if row in marked else "")
        lines.append(f"| {row}{mark} | " + " | ".join(cells) + f" | {ratio} | {len(rs)} |")
    new = (f" Among new items only: each cold user's target ranked among the {len(report.cold_items):,} new items "
           f"(a new-arrivals shelf; the other items hidden)." if any("new_only" in rs[0] for rs in report.rows.values())
           else "")
    return "\n".join(lines) + f"\n\nProtocol: {report.protocol}{new} Seeds: {report.seeds}.\n"


# ---- the dial: from content-driven to ID-driven worlds ------------------------------------------
DIAL_MODELS = ("Q-Bert4Rec", "SASRec-CE", "Content k-NN")


def run_dial(cfg, values: Sequence[float] = (0.0, 0.25, 0.5, 0.75, 1.0), *, seeds: Sequence[int] = (0,),
             path: str = "unknown", fraction: float = 0.1, by: str = "time", models: Sequence[str] = DIAL_MODELS,
             synthetic: dict | None = None, cache_root=None, log: Callable[[str], None] | None = print) -> list[dict]:
    """Sweep :attr:`~qbert4rec_lib.data.synthetic.SyntheticConfig.id_driven` (0 = next items follow attributes, 1 = they
    follow item-specific follow-ups no attribute explains): for each value generate the catalog (``synthetic``:
    other generator overrides), run the cold-start protocol and keep every model's warm- and cold-user metrics.
    Returns one dict per value: ``{"id_driven", "dataset", "report": ColdStartReport.to_json()}``."""
    from ..data.synthetic_folder import load_default

    out = []
    for value in values:
        ds = load_default(root=cache_root, id_driven=float(value), **(synthetic or {}))
        report = run_cold_start(ds, cfg, fraction=fraction, by=by, seeds=seeds, models=models, paths=(path,),
                                cache_root=cache_root, log=None)
        stats = ds.stats() | {"load_report": None}
        stats["source"] = Path(str(stats.get("source", ""))).name  # the cache folder's name, not a machine path
        out.append({"id_driven": float(value), "dataset": stats,
                    "report": report.to_json()})
        if log:
            log(f"id_driven {value}: " + "; ".join(
                f"{row} warm NDCG@10 {report.mean(row, 'warm', 'NDCG@10'):.4f} cold {report.mean(row, 'cold', 'NDCG@10'):.4f}"
                for row in report.rows))
    return out


def dial_table(points: list[dict], metric: str = "NDCG@10") -> str:
    """Markdown: one row per model, one column per dial value, cells ``warm / cold`` test ``metric`` (mean over
    seeds), then the protocol of the first point."""
    if not points:
        return "(no dial points)\n"
    values = [p["id_driven"] for p in points]
    lines = ["| model | " + " | ".join(f"id_driven {v:g}" for v in values) + " |",
             "|---|" + "---|" * len(values)]
    for row in points[0]["report"]["mean_std"]:
        cells = []
        for p in points:
            g = p["report"]["mean_std"][row]
            cells.append(f"{g['warm'][metric]['mean']:.4f} / {g['cold'][metric]['mean']:.4f}")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    first = points[0]["report"]
    return ("\n".join(lines) + f"\n\nCells: warm-user / cold-user test {metric} (mean over seeds "
            f"{first['seeds']}). Protocol: {first['protocol']}\n")


def dial_rows(points: list[dict]) -> dict[str, dict[str, list[float]]]:
    """``{row: {"warm": [NDCG@10 per point], "cold": [...]}}`` from :func:`run_dial`'s output."""
    rows: dict[str, dict[str, list[float]]] = {}
    for p in points:
        for row, groups in p["report"]["mean_std"].items():
            for g in ("warm", "cold"):
                rows.setdefault(row, {}).setdefault(g, []).append(groups[g]["NDCG@10"]["mean"])
    return rows
