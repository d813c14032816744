"""Where parts land: the geometry of FGA's attention maps against the figure (the non-white pixels of a studio
photo), the part losses built on it, and the parts of a trained model named by where they sit on its training
photos (the landmarks: training.landmarks).

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

from .landmarks import landmark_set, name_parts


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


def _cell_grid(attn: torch.Tensor, boxes: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell centres as x (1 or B, 1, 1, w) and y (1, 1, h, 1), in input fractions. With figure `boxes` (B, 4), x is
    folded about each figure's vertical axis onto its right half, so that a left and a right cuff (or a cuff seen
    from the front and from the back) lie at one point: a mirror pair is one compact part that sits still."""
    h, w = attn.shape[-2:]
    xs, ys = _cell_centres(h, w, attn.device)
    if boxes is None:
        return xs.view(1, 1, 1, w), ys.view(1, 1, h, 1)
    axis = ((boxes[:, 0] + boxes[:, 2]) / 2)[:, None]
    return (axis + (xs[None] - axis).abs()).view(-1, 1, 1, w), ys.view(1, 1, h, 1)


def centroids(attn: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
    """(B, K, 2): each map's centre of mass (x, y) in input fractions; folded about the figure's axis with
    `boxes`."""
    x, y = _cell_grid(attn, boxes)
    a = attn.float()
    return torch.stack([(a * x).sum(dim=(2, 3)), (a * y).sum(dim=(2, 3))], dim=-1)


def spread(attn: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
    """(B, K): each map's mean squared distance from its centroid (input fractions squared): SCOPS's
    concentration term; small for a compact part (or, folded with `boxes`, a compact mirror pair)."""
    x, y = _cell_grid(attn, boxes)
    c = centroids(attn, boxes)
    d2 = (x - c[..., 0, None, None]).pow(2) + (y - c[..., 1, None, None]).pow(2)
    return (attn.float() * d2).sum(dim=(2, 3))


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


def _box_grid(attn: torch.Tensor, boxes: torch.Tensor, folded: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Cell centres in figure-box coordinates, x (B, 1, 1, w) and y (B, 1, h, 1); x folded about the figure's
    axis if `folded`."""
    x, y = _cell_grid(attn, boxes if folded else None)
    origin, size = boxes[:, :2], (boxes[:, 2:] - boxes[:, :2]).clamp(min=1e-3)
    return ((x - origin[:, 0, None, None, None]) / size[:, 0, None, None, None],
            (y - origin[:, 1, None, None, None]) / size[:, 1, None, None, None])


def mass_at_sides(attn: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """(B, K): each map's mass in the outer quarters of the figure box (x < 0.25 or > 0.75 of its width, within its
    height), where a worn top's sleeves and cuffs are."""
    bx, by = _box_grid(attn, boxes, folded=False)
    inside = (by >= 0) & (by <= 1)
    sides = ((bx < 0.25) & (bx >= 0)) | ((bx > 0.75) & (bx <= 1))
    return (attn.float() * (sides & inside)).sum(dim=(2, 3))


def in_figure_box(points: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """points (B, K, 2) in input fractions, boxes (B, 4) -> points in figure-box coordinates."""
    origin, size = boxes[:, None, :2], (boxes[:, None, 2:] - boxes[:, None, :2]).clamp(min=1e-3)
    return (points - origin) / size


# ---------------------------------------------------------------------------------------------- losses
def background_loss(attn: torch.Tensor, figure: torch.Tensor) -> torch.Tensor:
    """Mean attention mass off the figure: a part that looks at the studio background explains nothing."""
    return (1.0 - mass_on_figure(attn, figure)).mean()


def concentration_loss(attn: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
    """Mean spread of the part maps (SCOPS, Hung et al. 2019): parts are compact regions, not scattered cells;
    with figure `boxes`, measured on maps folded about the figure's axis, so that both cuffs may be one part."""
    return spread(attn, boxes).mean()


def consistency_loss(attn: torch.Tensor, boxes: torch.Tensor, groups: torch.Tensor,
                     folded: bool = True) -> torch.Tensor:
    """Variance of each part's centroid, in figure-box coordinates, across the images of one group (a garment
    category) in the batch: a part sits on the same region of every garment of a kind. Folded about the figure's
    axis (`folded`), a cuff part pays nothing for being on the left in a back view and on the right in a front one.
    Groups < 0 (close-ups, whose figure box is not the garment's) and groups of one image are left out."""
    pos = in_figure_box(centroids(attn, boxes if folded else None), boxes)  # (B, K, 2)
    total, count = pos.new_zeros(()), 0
    for g in torch.unique(groups):
        sel = groups == g
        if g < 0 or sel.sum() < 2:
            continue
        p = pos[sel]
        total = total + (p - p.mean(0, keepdim=True)).pow(2).sum(-1).mean()
        count += 1
    return total / max(count, 1)


LAYOUT_WIDTH = 0.15  # figure boxes: the standard deviation of the layout prior's bump around a slot's landmark


def layout_loss(attn: torch.Tensor, boxes: torch.Tensor, targets: torch.Tensor,
                figure: torch.Tensor | None = None) -> torch.Tensor:
    """1 - the attention mass each part puts near its slot's landmark (a Gaussian bump of LAYOUT_WIDTH around
    `targets` (B, K, 2), folded figure-box coordinates; NaN: no landmark for that part on that photo), averaged
    over the parts that have one. Without it every part settles on the garment's midline, where a compact blob
    that sits still is cheapest; the prior gives sleeves, shoulders and legs a part of their own, and the
    retrieval terms decide what that part reads there (the bump leaves it free near its landmark). With `figure`
    (B, h, w), each cell's figure share, only mass on the figure counts: an arm is a thin column of cells, and
    the studio background beside a cuff is near its landmark too."""
    bx, by = _box_grid(attn, boxes, folded=True)
    known = ~targets.isnan().any(-1)  # (B, K)
    t = torch.nan_to_num(targets)
    d2 = (bx - t[..., 0, None, None]).pow(2) + (by - t[..., 1, None, None]).pow(2)
    bump = torch.exp(-d2 / (2 * LAYOUT_WIDTH ** 2))
    if figure is not None:
        bump = bump * figure[:, None].float()
    near = (attn.float() * bump).sum(dim=(2, 3))
    return (1.0 - near)[known].mean() if known.any() else near.new_zeros(())


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
    "mass" (N, K) attention on the figure, "sides" (N, K) attention in the figure box's outer quarters, "area"
    (N, K) effective area, "position" (N, K, 2) centroid in figure-box coordinates of the map folded about the
    figure's axis (ANCHORS' frame), and in the figure-box frame (TEMPLATE) "maps" (N, K, h, w) and "images"
    (N, h, w, 3).
    With `backdrop` (drawing from a generator seeded `seed`) the model sees each photo put in front of a
    background while the figure is still read off the clean photo: whether the parts stay on the garment once
    the background is no longer white."""
    out: dict[str, list[torch.Tensor]] = {k: [] for k in ("mass", "sides", "area", "position", "maps", "images")}
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
        out["sides"].append(mass_at_sides(attn, boxes))
        out["area"].append(effective_area(attn))
        out["position"].append(in_figure_box(centroids(attn, boxes), boxes))
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
