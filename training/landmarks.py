"""Where a garment's details lie and what a part is called: landmarks per kind of garment in figure-box
coordinates folded about the figure's vertical axis (training.parts), the slots of the layout prior, and part
names read off where each part sits."""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import torch

from mga.data import category_key
from mga.part_names import garment_kind

# Landmarks of a garment in figure-box coordinates, by the kind of garment. Shop photos show it worn, so the figure
# box spans the wearer: a top's from the head down to the thighs (the arms hanging at its sides), a bottom's from
# the belly to the feet (the legs either side of its axis); a part that sits on the wearer's head is named so.
# Positions are folded about the figure's vertical axis (x >= 0.5): left and right share a landmark, because a
# back view swaps them. Heights are where the landmark lies on the mean of Luma's training photos of the kind (a
# tee's hem at 0.84 of the box).
TORSO = [("head (not the garment)", (0.5, 0.06)), ("neckline", (0.5, 0.2)), ("chest", (0.5, 0.34)),
         ("front / zip", (0.5, 0.47)), ("waist", (0.5, 0.6)), ("pocket / lower front", (0.5, 0.7)),
         ("hem", (0.5, 0.84))]
ANCHORS: dict[str, list[tuple[str, tuple[float, float]]]] = {
    "top": TORSO + [("shoulder", (0.75, 0.24)), ("sleeve / cuff", (0.85, 0.5))],
    # a tee's sleeve ends above the elbow, and below it is a bare arm; a tank has straps and armholes instead
    "short-sleeved top": TORSO + [("shoulder", (0.75, 0.24)), ("sleeve", (0.82, 0.32)),
                                  ("arm (not the garment)", (0.88, 0.55))],
    "sleeveless top": TORSO + [("strap / armhole", (0.68, 0.24)), ("arm (not the garment)", (0.88, 0.45))],
    "bottom": [("waistband", (0.5, 0.06)), ("hip / pocket", (0.72, 0.18)), ("fly / crotch", (0.5, 0.3)),
               ("thigh", (0.7, 0.42)), ("knee", (0.7, 0.62)), ("hem / ankle", (0.7, 0.9))],
    # bottoms that end above the knee: the hem sits about halfway down the wearer (Luma's training photos of
    # shorts), and below it is a bare leg
    "short bottom": [("waistband", (0.5, 0.06)), ("hip / pocket", (0.72, 0.18)), ("fly / crotch", (0.5, 0.3)),
                     ("thigh", (0.7, 0.38)), ("hem", (0.7, 0.5)), ("leg (not the garment)", (0.7, 0.75))],
}
# The layout prior (layout_loss): the landmark each of six part slots is drawn to, per landmark set; None leaves a
# slot free there. The slots keep the order of the parts of the models trained before the prior, so that a
# fine-tune moves each part the least: hem, chest, neckline, then the front and pocket parts become the shoulder
# and the sleeve.
LAYOUT: dict[str, list[str | None]] = {
    "top": ["hem", "chest", "neckline", "shoulder", "sleeve / cuff", "waist"],
    "short-sleeved top": ["hem", "chest", "neckline", "shoulder", "sleeve", "waist"],
    "sleeveless top": ["hem", "chest", "neckline", "strap / armhole", "front / zip", "waist"],
    "bottom": ["knee", "hip / pocket", "waistband", "thigh", "hem / ankle", "fly / crotch"],
    "short bottom": ["hem", "hip / pocket", "waistband", "thigh", None, "fly / crotch"],
}


def layout_targets(categories: Sequence[str], num_parts: int) -> torch.Tensor:
    """(C, K, 2) each category's slot landmarks for layout_loss, NaN where there is none (garments of no kind
    ANCHORS knows, a free slot)."""
    if num_parts != len(LAYOUT["top"]):
        raise ValueError(f"the layout prior has {len(LAYOUT['top'])} part slots; the model has {num_parts} parts")
    out = torch.full((len(categories), num_parts, 2), float("nan"))
    for c, category in enumerate(categories):
        kind = landmark_set(category)
        where = dict(ANCHORS.get(kind, []))
        for k, name in enumerate(LAYOUT.get(kind, [])):
            if name is not None:
                out[c, k] = torch.tensor(where[name])
    return out


# How far (figure boxes) a part may be from a free landmark to take its name rather than its nearest one's.
MAX_SHIFT = 0.08


def fold(pos: np.ndarray) -> np.ndarray:
    """(..., 2) figure-box positions folded about the figure's vertical axis (x -> 0.5 + |x - 0.5|), as ANCHORS
    are written."""
    pos = np.array(pos, dtype=np.float64)
    pos[..., 0] = 0.5 + np.abs(pos[..., 0] - 0.5)
    return pos


def _distances(kind: str, pos: np.ndarray) -> np.ndarray:
    """(K, A) distances of K positions (folded) to the kind's anchors."""
    anchors = np.array([xy for _, xy in ANCHORS[kind]])
    return np.linalg.norm(fold(pos)[:, None, :] - anchors[None], axis=-1)


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


# Words that tell apart two or three parts on one landmark, along the axis they are further apart on (positions
# are folded about the figure's axis, so across it is from the axis outwards); more parts on one landmark are
# numbered.
SIDES = {1: ("upper", "middle", "lower"), 0: ("inner", "middle", "outer")}


def _told_apart(raw: Sequence[str], pos: np.ndarray) -> list[str]:
    out, pos = list(raw), fold(pos)
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


# Category words of garments shorter than their kind's landmarks assume: a short's hem is mid-thigh, a tee's
# sleeve above the elbow, a tank has none; a top of no such word has long sleeves.
SHORTER = {"bottom": ("short bottom", ("shorts", "bermudas", "hotpants")),
           "top": ("short-sleeved top", ("tees", "tee", "t", "polos")),
           "sleeveless": ("sleeveless top", ("tanks", "tank", "bras", "camisoles", "vests"))}


def landmark_set(category: str) -> str:
    """The ANCHORS a category's parts are named by: its kind's, or that of a shorter garment of the kind."""
    kind, words = garment_kind(category), category_key(category).split()
    for key in (("sleeveless", "top") if kind == "top" else (kind,)):
        name, shorter = SHORTER.get(key, ("", ()))
        if any(w in shorter for w in words):
            return name
    return kind
