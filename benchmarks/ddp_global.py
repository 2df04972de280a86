"""Region losses under DistributedDataParallel: each rank's loss and gradient against the
single-process full batch, with per-rank statistics (``sync="local"``, before) and with global
statistics (``sync="global"``, after).

Run:  python benchmarks/ddp_global.py [--data ../shared/datasets/camvid] [--out FILE.md]

Setting (issue 24): CPU, gloo, 2 processes of 4 images each against one process of the same 8
images. Images: the first 8 of CamVid's ``train.npz`` (180x240, 11 classes, void label 11
ignored); logits: float32 ``2 * one_hot(label) + N(0, 1.5^2)`` (seed 0), a model that is partly
right. For each loss: the full-batch loss; the mean over the 2 ranks of each rank's loss; the
cosine between the full-batch gradient of the 8 images' logits and the ranks' gradients
concatenated as DDP would average them (``/ world_size``); and the relative error
``|g - g_full| / |g_full|`` of the latter. The exported searched loss is
``results/search-miou-camvid/best_loss.yaml``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from datetime import date
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine_info import machine_summary  # noqa: E402

from autoloss.losses import load_loss  # noqa: E402

WORLD = 2
IGNORE = 11
LOSSES = {
    "exported searched surrogate": "results/search-miou-camvid/best_loss.yaml",
    "`lovasz_softmax`": "lovasz_softmax",
    "`jaccard_metric`": "jaccard_metric",
    "`dice`": "dice",
    "cross-entropy": "cross_entropy",
}
SYNCED = {"cross_entropy": False}  # cross-entropy takes no sync (a pixel mean)


def batch(data: Path) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.from_numpy(np.load(data / "train.npz")["labels"][:8].astype(np.int64))
    gen = torch.Generator().manual_seed(0)
    one_hot = torch.nn.functional.one_hot(labels.clamp(0, IGNORE - 1), IGNORE)
    logits = 2.0 * one_hot.permute(0, 3, 1, 2).float()
    logits = logits + 1.5 * torch.randn(logits.shape, generator=gen)
    return logits, labels


def loss_for(spec: str, sync: str):
    path = ROOT / spec if spec.endswith(".yaml") else spec
    options = {"ignore_index": IGNORE}
    if SYNCED.get(spec, True):
        options["sync"] = sync
    return load_loss(path, **options)


def worker(rank: int, init_file: str, data: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=WORLD)
    logits, labels = batch(Path(data))
    part = slice(4 * rank, 4 * rank + 4)
    found = {}
    for spec in LOSSES.values():
        for sync in ("local", "global"):
            x = logits[part].clone().requires_grad_(True)
            value = loss_for(spec, sync)(x, labels[part])
            value.backward()
            found[f"{spec} {sync}"] = {"loss": float(value.detach()), "grad": x.grad.tolist()}
    Path(out, f"rank{rank}.json").write_text(json.dumps(found))
    dist.destroy_process_group()


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    return float(a @ b / (a.norm() * b.norm()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "datasets" / "camvid",
                        help="CamVid folder with train.npz")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks" /
                        "ddp_global.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    logits, labels = batch(args.data)
    with tempfile.TemporaryDirectory(prefix="ddp-global-") as tmp:
        mp.spawn(worker, args=(str(Path(tmp) / "init"), str(args.data), tmp), nprocs=WORLD,
                 join=True)
        ranks = [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(WORLD)]
    rows, record = [], {}
    for label, spec in LOSSES.items():
        x = logits.clone().requires_grad_(True)
        full = loss_for(spec, "local")(x, labels)
        full.backward()
        cells = [label, f"{float(full.detach()):.4f}"]
        for sync in ("local", "global"):
            key = f"{spec} {sync}"
            mean = sum(r[key]["loss"] for r in ranks) / WORLD
            grad = torch.cat([torch.tensor(r[key]["grad"]) for r in ranks]) / WORLD
            err = float((grad - x.grad).norm() / x.grad.norm())
            cells += [f"{mean:.4f}", f"{cosine(grad, x.grad):.4f}", f"{err:.1e}"]
            record[key] = {"full_loss": float(full.detach()), "mean_rank_loss": mean,
                           "cosine": cosine(grad, x.grad), "relative_error": err}
        rows.append("| " + " | ".join(cells) + " |")
        print(rows[-1], flush=True)
    text = "\n".join([
        "# Region losses under DDP: per-rank vs global statistics",
        "",
        f"Measured {date.today()} on {machine_summary()}. Rerun: "
        "`python benchmarks/ddp_global.py`. 2 gloo processes of 4 CamVid images (180x240, "
        "void 11 ignored) against one process of the same 8; float32 logits "
        "`2 one_hot(label) + N(0, 1.5^2)`. Gradient: the ranks' logits gradients concatenated "
        "and divided by the world size (what DDP's averaging makes of them), against the "
        "full-batch gradient. Before: `sync=\"local\"` (the default, each rank's own "
        "statistics); after: `sync=\"global\"`. Cross-entropy takes no `sync`: a mean over each "
        "rank's valid pixels, which DDP's averaging makes the full batch's only when the ranks "
        "hold equal counts of valid (non-void) pixels, hence its small error in both columns.",
        "",
        "| loss | loss, full batch | before: mean of the 2 ranks | before: grad cosine | "
        "before: rel. grad error | after: mean of the 2 ranks | after: grad cosine | "
        "after: rel. grad error |",
        "|---|---|---|---|---|---|---|---|",
        *rows, ""])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")


if __name__ == "__main__":
    os.environ.setdefault("AUTOLOSS_COMPILE", "0")
    main()
