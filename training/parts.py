"""Where parts land: the geometry of FGA's attention maps against the figure (the non-white pixels of a studio
photo), the part losses built on it, and part names read off where each part sits on the training photos.

Coordinates are fractions of the letterboxed input, (x, y) with y down. A figure box is the bounding box of the
figure; a point "in figure-box coordinates" is (0, 0) at its top-left and (1, 1) at its bottom-right, so that the
same detail of a short and of a long garment gets the same coordinates.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from mga.data import Record, RetrievalData, category_key, category_of, load_retrieval_data
from mga.part_names import KIND_KEY, garment_kind
from mga.transforms import garment_mask


def figure_on_grid(masks: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, S, S) figure masks in [0, 1] -> (B, h, w): the figure's share of each token cell."""
    return F.adaptive_avg_pool2d(masks.float()[:, None], grid)[:, 0]


def mass_on_figure(attn: torch.Tensor, figure: torch.Tensor) -> torch.Tensor:
    """attn (B, K, h, w) summing to 1 per map, figure (B, h, w) -> (B, K): each part's attention on the figure."""
    return (attn * figure[:, None]).sum(dim=(2, 3))


def effective_area(attn: torch.Tensor) -> torch.Tensor:
    """(B, K): the share of the grid a map spreads over (inverse participation ratio / cells): 1/N for one
    cell, 1 for a uniform map."""
    a = attn.flatten(2)
    return 1.0 / (a.pow(2).sum(-1) * a.shape[-1]).clamp(min=1e-12)


def _cell_centres(h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
    return xs, ys


def centroids(attn: torch.Tensor) -> torch.Tensor:
    """(B, K, 2): each map's centre of mass (x, y) in input fractions."""
    h, w = attn.shape[-2:]
    xs, ys = _cell_centres(h, w, attn.device)
    a = attn.float()
    return torch.stack([(a.sum(2) * xs).sum(-1), (a.sum(3) * ys).sum(-1)], dim=-1)


def spread(attn: torch.Tensor) -> torch.Tensor:
    """(B, K): each map's mean squared distance from its centroid (input fractions squared): SCOPS's
    concentration term; small for a compact part."""
    h, w = attn.shape[-2:]
    xs, ys = _cell_centres(h, w, attn.device)
    c = centroids(attn)
    dx2 = (xs.view(1, 1, 1, w) - c[..., 0, None, None]).pow(2)
    dy2 = (ys.view(1, 1, h, 1) - c[..., 1, None, None]).pow(2)
    return (attn.float() * (dx2 + dy2)).sum(dim=(2, 3))


def figure_boxes(masks: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """(B, S, S) masks -> (B, 4) figure boxes (x0, y0, x1, y1) in input fractions; the whole frame when a mask
    is empty."""
    b, s_h, s_w = masks.shape
    on = masks > threshold
    rows, cols = on.any(2), on.any(1)
    ar_h = torch.arange(s_h, device=masks.device)
    ar_w = torch.arange(s_w, device=masks.device)
    y0 = torch.where(rows, ar_h, s_h).min(1).values
    y1 = torch.where(rows, ar_h + 1, 0).max(1).values
    x0 = torch.where(cols, ar_w, s_w).min(1).values
    x1 = torch.where(cols, ar_w + 1, 0).max(1).values
    empty = ~rows.any(1)
    box = torch.stack([x0 / s_w, y0 / s_h, x1 / s_w, y1 / s_h], dim=1).float()
    return torch.where(empty[:, None], torch.tensor([0.0, 0.0, 1.0, 1.0], device=masks.device), box)


def in_figure_box(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """points (B, K, 2) in input fractions, boxes (B, 4) -> points in figure-box coordinates."""
    origin, size = boxes[:, None, :2], (boxes[:, None, 2:] - boxes[:, None, :2]).clamp(min=1e-3)
    return (points - origin) / size


# ---------------------------------------------------------------------------------------------- losses
def background_loss(attn: torch.Tensor, figure: torch.Tensor) -> torch.Tensor:
    """Mean attention mass off the figure: a part that looks at the studio background explains nothing."""
    return (1.0 - mass_on_figure(attn, figure)).mean()


def concentration_loss(attn: torch.Tensor) -> torch.Tensor:
    """Mean spread of the part maps (SCOPS, Hung et al. 2019): parts are compact regions, not scattered cells."""
    return spread(attn).mean()


def consistency_loss(attn: torch.Tensor, boxes: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Variance of each part's centroid, in figure-box coordinates, across the images of one group (a garment
    category) in the batch: a part sits on the same region of every garment of a kind. Groups < 0 (close-ups,
    whose figure box is not the garment's) and groups of one image are left out."""
    pos = in_figure_box(centroids(attn), boxes)  # (B, K, 2)
    total, count = pos.new_zeros(()), 0
    for g in torch.unique(groups):
        sel = groups == g
        if g < 0 or sel.sum() < 2:
            continue
        p = pos[sel]
        total = total + (p - p.mean(0, keepdim=True)).pow(2).sum(-1).mean()
        count += 1
    return total / max(count, 1)


# ---------------------------------------------------------------------------------------------- names
# Landmarks of a garment in figure-box coordinates, by the kind of garment. Shop photos show it worn, so the figure
# box spans the wearer: a top's from the head down to the thighs, a bottom's from the belly to the feet; a part that
# sits on the wearer's head is named so. Left and right share a name: a back view swaps them. Heights are where
# the landmark lies on the mean of Luma's training photos of the kind (a tee's hem at 0.84 of the box).
ANCHORS: dict[str, list[tuple[str, tuple[float, float]]]] = {
    "top": [("head (not the garment)", (0.5, 0.06)), ("neckline", (0.5, 0.2)), ("chest", (0.5, 0.34)),
            ("front / zip", (0.5, 0.47)), ("waist", (0.5, 0.6)), ("pocket / lower front", (0.5, 0.7)),
            ("hem", (0.5, 0.84)),
            ("sleeve / cuff", (0.15, 0.5)), ("sleeve / cuff", (0.85, 0.5))],
    "bottom": [("waistband", (0.5, 0.06)), ("hip / pocket", (0.5, 0.18)), ("fly / crotch", (0.5, 0.3)),
               ("thigh", (0.5, 0.45)), ("knee", (0.5, 0.62)), ("hem / ankle", (0.5, 0.88))],
    # bottoms that end above the knee: the hem sits about halfway down the wearer (Luma's training photos of
    # shorts), and below it is a bare leg
    "short bottom": [("waistband", (0.5, 0.06)), ("hip / pocket", (0.5, 0.18)), ("fly / crotch", (0.5, 0.3)),
                     ("thigh", (0.5, 0.4)), ("hem", (0.5, 0.5)), ("leg (not the garment)", (0.5, 0.75))],
}
# How far (figure boxes) a part may be from a free landmark to take its name rather than its nearest one's.
MAX_SHIFT = 0.08


def _distances(kind: str, pos: np.ndarray) -> np.ndarray:
    """(K, A) distances of K positions to the kind's anchors."""
    anchors = np.array([xy for _, xy in ANCHORS[kind]])
    return np.linalg.norm(np.asarray(pos, dtype=np.float64)[:, None, :] - anchors[None], axis=-1)


def region_name(kind: str, x: float, y: float) -> str:
    """The name of the landmark nearest to a point."""
    return ANCHORS[kind][int(_distances(kind, np.array([[x, y]]))[0].argmin())][0]


def name_parts(positions: Mapping[str, np.ndarray], kinds: Mapping[str, str]) -> dict[str, list[str]]:
    """Names per category from each part's mean position there ((K, 2) figure-box coordinates per category):
    closest pairs first, a part takes a free landmark within MAX_SHIFT, so that two parts of a category get two
    names where the garment allows; a part left without one takes its nearest landmark, and parts sharing one are
    told apart by where they sit ("upper hem", "lower hem")."""
    names: dict[str, list[str]] = {}
    for category, pos in positions.items():
        kind = kinds.get(category, "top")
        d = _distances(kind, pos)
        chosen: dict[int, int] = {}
        for flat in np.argsort(d, axis=None):
            k, a = divmod(int(flat), d.shape[1])
            if k not in chosen and a not in chosen.values() and d[k, a] <= MAX_SHIFT:
                chosen[k] = a
        raw = [ANCHORS[kind][chosen.get(k, int(d[k].argmin()))][0] for k in range(len(pos))]
        names[category] = _told_apart(raw, np.asarray(pos))
    return names


# Words that tell apart two or three parts on one landmark, along the axis they are further apart on (as seen in
# the photo); more parts on one landmark are numbered.
SIDES = {1: ("upper", "middle", "lower"), 0: ("left", "centre", "right")}


def _told_apart(raw: Sequence[str], pos: np.ndarray) -> list[str]:
    out = list(raw)
    for name in set(raw):
        idx = [k for k, n in enumerate(raw) if n == name]
        if len(idx) < 2:
            continue
        axis = 1 if np.ptp(pos[idx, 1]) >= np.ptp(pos[idx, 0]) else 0
        words = {2: SIDES[axis][::2], 3: SIDES[axis]}.get(len(idx))
        for rank, j in enumerate(np.argsort(pos[idx, axis], kind="stable")):
            out[idx[j]] = f"{words[rank]} {name}" if words else f"{name} {rank + 1}"
    return out


def landmark_of(name: str) -> str:
    """The landmark a part's name says it sits on: "lower hem" -> "hem", "hem 4" -> "hem"."""
    first, _, rest = name.partition(" ")
    if rest and first in SIDES[0] + SIDES[1]:
        name = rest
    head, _, last = name.rpartition(" ")
    return head if head and last.isdigit() else name


SHORT_BOTTOMS = ("shorts", "bermudas", "hotpants")


def landmark_set(category: str) -> str:
    """The ANCHORS a category's parts are named by: its kind's, or the short bottoms' (their hem is mid-thigh)."""
    kind = garment_kind(category)
    short = kind == "bottom" and any(w in SHORT_BOTTOMS for w in category_key(category).split())
    return "short bottom" if short else kind


Backdrop = Callable[[Image.Image, random.Random], Image.Image]  # a photo -> the same photo on a background
TEMPLATE = (64, 48)  # (h, w) of the figure-box frame that mean maps and template garments are drawn in


def _in_box(x: torch.Tensor, box: torch.Tensor, size: int) -> torch.Tensor:
    """(C, h, w) map or image over the letterboxed input -> its figure box resampled to TEMPLATE."""
    x = F.interpolate(x[None].float(), size=(size, size), mode="bilinear", align_corners=False)[0]
    x0, y0, x1, y1 = (int(round(float(v) * size)) for v in box)
    x = x[:, y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)]
    return F.interpolate(x[None], size=TEMPLATE, mode="bilinear", align_corners=False)[0]


@torch.inference_mode()
def part_geometry(model, root: Path, records: Sequence[Record], batch_size: int = 16,
                  backdrop: Backdrop | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Where each part lands on each image (studio photos, letterboxed as the model sees them):
    "mass" (N, K) attention on the figure, "area" (N, K) effective area, "position" (N, K, 2) centroid in
    figure-box coordinates, and in the figure-box frame (TEMPLATE) "maps" (N, K, h, w) and "images" (N, h, w, 3).
    With `backdrop` (drawing from a generator seeded `seed`) the model sees each photo put in front of a
    background while the figure is still read off the clean photo: whether the parts stay on the garment once
    the background is no longer white."""
    out: dict[str, list[torch.Tensor]] = {k: [] for k in ("mass", "area", "position", "maps", "images")}
    size = model.config.image_size
    rng = random.Random(seed)
    for s in range(0, len(records), batch_size):
        photos = [model.transform.load(Path(root) / r.path) for r in records[s:s + batch_size]]
        pixels = torch.stack([model.transform.pixels(p) for p in photos])
        seen = pixels if backdrop is None else torch.stack([model.transform.pixels(backdrop(p, rng)) for p in photos])
        masks = torch.from_numpy(np.stack([garment_mask(Image.fromarray(p.permute(1, 2, 0).numpy()))
                                           for p in pixels]))
        attn = model.encode(seen).attn
        boxes = figure_boxes(masks)
        out["mass"].append(mass_on_figure(attn, figure_on_grid(masks, attn.shape[-2:])))
        out["area"].append(effective_area(attn))
        out["position"].append(in_figure_box(centroids(attn), boxes))
        out["maps"].append(torch.stack([_in_box(a, b, size) for a, b in zip(attn, boxes)]))
        out["images"].append(torch.stack([_in_box(p, b, size).permute(1, 2, 0) for p, b in zip(pixels, boxes)]))
    return {k: torch.cat(v).numpy() for k, v in out.items()}


def names_from_positions(positions: np.ndarray, categories: Sequence[str]) -> dict[str, list[str]]:
    """Part names per category key, and per kind of garment (KIND_KEY), from each part's mean position over
    those photos."""
    cats = np.array([category_key(c) for c in categories])
    kinds = np.array([garment_kind(c) for c in cats])
    cats, kinds, positions = cats[kinds != "other"], kinds[kinds != "other"], positions[kinds != "other"]
    groups = {c: (cats == c, landmark_set(c)) for c in sorted(set(cats))}
    groups |= {KIND_KEY.format(kind): (kinds == kind, kind) for kind in sorted(set(kinds))}
    means = {g: positions[sel].mean(0) for g, (sel, _) in groups.items()}
    return name_parts(means, {g: kind for g, (_, kind) in groups.items()})


def name_model_parts(model, data: RetrievalData) -> dict[str, list[str]]:
    """Name a trained model's parts from where they land on its training photos (stored in its config)."""
    positions = part_geometry(model, data.root, data.train)["position"]
    model.config.part_names = names_from_positions(positions, [category_of(r.path) for r in data.train])
    return model.config.part_names


def names_table(names: Mapping[str, Sequence[str]]) -> str:
    """One line per category key: its parts' names, as the CLIs print them."""
    return "\n".join(f"{key:<22} {', '.join(row)}" for key, row in names.items())


def main(argv: Sequence[str] | None = None) -> None:
    """python -m training.parts: (re)name the parts of a checkpoint from its training data."""
    import argparse

    from .hub import load_model, save_model_atomically

    p = argparse.ArgumentParser(prog="python -m training.parts", description="Name a checkpoint's parts by where they "
                                "land on the training photos of a data set (In-shop layout), per category.")
    p.add_argument("--weights", required=True, help="checkpoint folder or Hub id")
    p.add_argument("--data", required=True, help="the data set it was trained on (its train split is used)")
    p.add_argument("--out", help="write a named copy of the checkpoint here (default: rewrite the config.json of "
                                 "--weights, a folder, and nothing else in it)")
    args = p.parse_args(argv)
    model = load_model(args.weights)
    names = name_model_parts(model, load_retrieval_data(args.data))
    out = Path(args.out or args.weights)
    if args.out:
        save_model_atomically(model, out)
    model.config.save(out)
    print(names_table(names))


if __name__ == "__main__":
    main()
