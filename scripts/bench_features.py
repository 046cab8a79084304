"""Benchmark the feature stage on this machine (not a test: it prints figures).

    .venv/bin/python scripts/bench_features.py [--beauty ../shared/data/amazon-beauty] [--text-items N]
                                               [--threads T] [--json]

Measures, each from a cold cache (a temporary cache root):
  * text: load time of the encoder, then throughput (items/s) and total time to encode the
    template text of every Beauty item (12,101) with the bundled all-MiniLM-L6-v2;
  * image: fit + encode time of the catalog CLIP on the embedded default (``image_model="fit"``);
  * structural: co-occurrence -> PPMI -> SVD time on Beauty's training split (median of 3).

The machine's load average is printed at start and end: other processes competing for the
CPU slow every figure down, so compare runs only at similar load.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from qbert4rec_lib import open_dataset  # noqa: E402
from qbert4rec_lib.semantic import encoders, features as F  # noqa: E402


def bench_text(ds, limit: int | None, batch_size: int) -> dict:
    texts = encoders.item_texts(ds.items)[:limit] if limit else encoders.item_texts(ds.items)
    t0 = time.perf_counter()
    encoder = encoders.TextEncoder(encoders.BUNDLED_MINILM, max_tokens=128)
    load = time.perf_counter() - t0
    lengths = encoder.token_lengths(texts)
    t0 = time.perf_counter()
    vecs = encoder.encode(texts, batch_size=batch_size, progress=False)
    total = time.perf_counter() - t0
    return {"items": len(texts), "dim": int(vecs.shape[1]), "load_s": round(load, 2), "encode_s": round(total, 1),
            "items_per_s": round(len(texts) / total, 1), "mean_tokens": round(float(lengths.mean()), 1),
            "max_tokens": int(lengths.max()), "batch_size": batch_size}


def bench_image(ds, cache: Path) -> dict:
    t0 = time.perf_counter()
    fs = F.build_features(ds, F.FeatureConfig(modalities=("image",)), cache_root=cache, progress=False)
    total = time.perf_counter() - t0
    meta = fs.modalities["image"].meta
    return {"items": int(fs.modalities["image"].present.sum()), "dim": fs.dims()["image"], "total_s": round(total, 1),
            "epochs": meta["fit"]["epochs"], "final_loss": meta["fit_final_loss"], "params": meta["fit"]["params"]}


def bench_structural(ds, repeats: int = 3) -> dict:
    train = ds.split(max_len=0).train
    cfg = F.FeatureConfig()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        res = encoders.structural_features(train, ds.num_items, dim=cfg.structural_dim, window=cfg.structural_window,
                                    cds=cfg.structural_cds, seed=cfg.seed)
        times.append(time.perf_counter() - t0)
    return {"items": ds.num_items, "present": int(res.present.sum()), "dim": res.info["dim"],
            "median_s": round(statistics.median(times), 2), "runs": [round(t, 2) for t in times]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--beauty", default=str(REPO.parent / "shared" / "data" / "amazon-beauty"))
    parser.add_argument("--text-items", type=int, default=0, help="encode only the first N Beauty items (0 = all)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    out: dict = {"load_average_start": [round(x, 2) for x in os.getloadavg()], "cpus": os.cpu_count()}
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    out["torch_threads"] = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="bench_features_") as tmp:
        os.environ["QBERT4REC_CACHE"] = tmp  # cold caches, nothing left behind
        default = open_dataset("default")
        out["image_default"] = bench_image(default, Path(tmp))
        if (Path(args.beauty) / "user_sequence.txt").is_file():
            t0 = time.perf_counter()
            beauty = open_dataset(args.beauty)
            out["beauty_load_s"] = round(time.perf_counter() - t0, 2)
            out["structural_beauty"] = bench_structural(beauty)
            out["text_beauty"] = bench_text(beauty, args.text_items or None, args.batch_size)
        else:
            out["beauty"] = f"not found at {args.beauty}: text and structural benchmarks skipped"
    out["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    rows = []
    if "text_beauty" in out:
        t = out["text_beauty"]
        rows.append(("text, Beauty (MiniLM-L6, 384-d)", f"{t['items']:,} items", f"{t['encode_s']} s",
                     f"{t['items_per_s']} items/s, +{t['load_s']} s model load, mean {t['mean_tokens']} tokens"))
    i = out["image_default"]
    rows.append(("image, default (fit + encode)", f"{i['items']:,} items", f"{i['total_s']} s",
                 f"{i['epochs']} epochs, {i['params'] / 1e6:.1f} M params, final loss {i['final_loss']}"))
    if "structural_beauty" in out:
        s = out["structural_beauty"]
        rows.append(("structural, Beauty (PPMI-SVD)", f"{s['present']:,}/{s['items']:,} items", f"{s['median_s']} s",
                     f"median of {len(s['runs'])}, dim {s['dim']}"))
    width = [max(len(r[c]) for r in rows) for c in range(3)]
    print(f"feature benchmark: {out['cpus']} CPUs, torch threads {out['torch_threads']}, "
          f"load average {out['load_average_start']} -> {out['load_average_end']}")
    for r in rows:
        print("  " + "  ".join(r[c].ljust(width[c]) for c in range(3)) + "  " + r[3])
    if "beauty" in out:
        print("  " + out["beauty"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
