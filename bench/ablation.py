"""Ablations over seeds: zero-shot backbone, fine-tuned global only, + FGA parts (coarse), + ATA re-ranking.

    python -m bench.ablation --data ../shared/data/luma-inshop --out runs/ablation --seeds 0 1 2

Every variant trains with the same budget (epochs, batch) through `python -m training.train`, several runs at
once when --parallel > 1 (a GPU has room for many). Prints a table of mean +- std over seeds and writes
results.json, table.md and recall.png to --out.
"""
from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from mga.backbones import TokenBackbone
from mga.config import MGAConfig
from mga.data import load_retrieval_data
from training.batches import ImageDataset
from mga.devices import resolve_device
from mga.hub import load_model
from training.evaluate import encode_records, plot_recall
from training.metrics import INSHOP_KS, recall_at_k
from mga.transforms import EvalTransform, working_side

from .sweep import summarize, train_run

# variant -> extra training.train flags; which of train's evaluations it reports, under which name
VARIANTS: dict[str, tuple[list[str], dict[str, str]]] = {
    "global": (["--w-coarse", "0", "--w-ata", "0", "--w-div", "0"], {"global": "fine-tuned global only"}),
    "mga": ([], {"global": "MGA, global token only", "coarse": "+ FGA parts (coarse embedding)",
                 "ata": "+ ATA re-ranking"}),
}


@torch.inference_mode()
def zero_shot(data_root: str, backbone: str, device: torch.device) -> dict[str, float]:
    """The pretrained backbone's own global descriptor (GeM of the last map, or CLS), cosine ranking."""
    cfg = MGAConfig(backbone=backbone)
    net = TokenBackbone(backbone, cfg.image_size, cfg.gem_p)
    net.load_pretrained()
    net.to(device).eval()
    data = load_retrieval_data(data_root)

    def encode(records):
        ds = ImageDataset(data.root, records, EvalTransform(cfg.image_size, cfg.mean, cfg.std),
                          max_side=working_side(cfg.image_size))
        return torch.cat([F.normalize(net(x.to(device))[0].float(), dim=-1).cpu()
                          for x, _ in DataLoader(ds, batch_size=32, num_workers=2)])

    q, g = encode(data.query), encode(data.gallery)
    order = (q @ g.T).argsort(dim=1, descending=True)[:, : max(INSHOP_KS)].numpy()
    return recall_at_k(order, [r.item_id for r in data.query], [r.item_id for r in data.gallery], INSHOP_KS)


@torch.inference_mode()
def global_only(data_root: str, weights: Path) -> dict[str, float]:
    """A trained model's global token alone as the descriptor (full photos, cosine ranking): the ablation's row
    below the parts and ATA, which the app never ranks by."""
    model, data = load_model(weights), load_retrieval_data(data_root)
    q, g = (encode_records(model, data.root, records).global_.float() for records in (data.query, data.gallery))
    order = (q @ g.T).argsort(dim=1, descending=True)[:, : max(INSHOP_KS)].numpy()
    return recall_at_k(order, [r.item_id for r in data.query], [r.item_id for r in data.gallery], INSHOP_KS)


def run_variant(args: argparse.Namespace, backbone: str, variant: str, seed: int) -> dict:
    flags = ["--backbone", backbone, "--epochs", str(args.epochs), *VARIANTS[variant][0], *args.train_args]
    out = Path(args.out) / f"{backbone}-{variant}-s{seed}"
    result = train_run(args.data, out, flags, seed, args.workers, args.threads, args.device)
    return {**result, "global": global_only(args.data, out / "model")}


def main(argv: Sequence[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.ablation", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--backbones", nargs="+", default=["tf_efficientnet_lite0"])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--parallel", type=int, default=1, help="training runs at once")
    p.add_argument("--workers", type=int, default=2, help="data loader workers per run")
    p.add_argument("--threads", type=int, default=0, help="CPU threads per run (0: torch's default)")
    p.add_argument("--device", default="auto")
    p.add_argument("--train-args", nargs=argparse.REMAINDER, default=[], help="passed on to training.train")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(args.device)

    jobs = [(b, v, s) for b in args.backbones for v in args.variants for s in args.seeds]
    start = time.perf_counter()
    with ThreadPoolExecutor(args.parallel) as pool:
        evals = list(pool.map(lambda job: run_variant(args, *job), jobs))
    rows: dict[str, dict] = {}
    for backbone in args.backbones:
        rows[f"{backbone}: zero-shot backbone descriptor"] = {"runs": [zero_shot(args.data, backbone, device)]}
        for variant in args.variants:
            runs = [e for (b, v, _), e in zip(jobs, evals) if (b, v) == (backbone, variant)]
            for key, name in VARIANTS[variant][1].items():
                rows[f"{backbone}: {name}"] = {"runs": [r[key] for r in runs],
                                               "train_seconds": [r["train_seconds"] for r in runs]}
    table = ["| variant | " + " | ".join(f"R@{k}" for k in (1, 5, 10, 20)) + " | runs |", "|---|---|---|---|---|---|"]
    for name, row in rows.items():
        stats = {k: summarize([r[f"R@{k}"] for r in row["runs"]]) for k in (1, 5, 10, 20)}
        row["summary"] = stats
        cells = [f"{s['mean']:.3f} ± {s['std']:.3f}" for s in stats.values()]
        table.append(f"| {name} | " + " | ".join(cells) + f" | {len(row['runs'])} |")
    text = "\n".join(table)
    print(text)
    print(f"device {device}, {args.epochs} epochs, wall {time.perf_counter() - start:.0f} s")
    (out / "table.md").write_text(text + "\n")
    (out / "results.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2) + "\n")
    plot_recall({name: {f"R@{k}": v["mean"] for k, v in row["summary"].items()} for name, row in rows.items()},
                out / "recall.png", "Recall@K, mean over seeds")
    return rows


if __name__ == "__main__":
    main()
