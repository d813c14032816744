"""Kinds of garment in real phone photos, and a training term that puts each photo near the shop's photos of its
kind.

Fine-tuning on a few hundred studio photos teaches the model products, not what a phone photo of shorts has in
common with a shop's shorts: the shop's #1 for a shopper's photo is of the photo's kind less often than with the
untrained backbone (bench.phone_photos). Real phone photos sorted by kind (`distractors/validation`, the training
side; never `distractors/test`) can teach that directly: each step encodes a few of them with the shop batch, and
multi-similarity on the global token asks every photo to sit closer to the batch's shop photos of an accepted
category (KINDS) than to any other. The product terms and the parts are left as they are.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from mga.data import category_key
from mga.transforms import EvalTransform

from .losses import multi_similarity_masked

# phone-photo kind (a folder of the distractors) -> the shop (Luma) categories that are that kind of garment;
# kinds the shop does not sell (shoes, dresses, ...) are left out
KINDS: dict[str, tuple[str, ...]] = {
    "t-shirt": ("Tees", "Tanks", "Bras_Tanks"),
    "longsleeve": ("Tees", "Hoodies_Sweatshirts", "Jackets"),
    "outwear": ("Jackets", "Hoodies_Sweatshirts"),
    "pants": ("Pants",),
    "shorts": ("Shorts",),
}


def kind_photos(folder: str | Path) -> list[tuple[Path, str]]:
    """(path, kind) of every .jpg in `folder`/<kind>/ for the kinds of KINDS, in a fixed order."""
    return [(path, kind) for kind in KINDS for path in sorted((Path(folder) / kind).glob("*.jpg"))]


def accepts(kind: str, category: str) -> bool:
    """Whether a shop photo of `category` (any spelling) is of the phone photo's `kind`."""
    return category_key(category) in {category_key(c) for c in KINDS[kind]}


class KindTerm:
    """Phone photos with their kinds, decoded once (letterboxed pixels), and the term that ranks the shop batch's
    photos of each photo's kind above the rest. A photo whose kind has no shop photo in the batch counts for
    nothing that step."""

    def __init__(self, folder: str | Path, transform: EvalTransform, categories: Sequence[str], batch: int):
        """`categories`: the shop's category names, indexed by the category ids the training batches carry."""
        found = kind_photos(folder)
        if len(found) < 2:
            raise ValueError(f"{folder}: the kind term needs phone photos in folders named {', '.join(KINDS)}")
        self.pixels = transform.load_pixels([p for p, _ in found])
        kinds = list(KINDS)
        self.kind = torch.tensor([kinds.index(k) for _, k in found])
        # (kinds, categories): which shop category ids count as each kind
        self.accepted = torch.tensor([[accepts(k, c) for c in categories] for k in kinds])
        self.batch, self.normalize = min(batch, len(found)), transform.normalize

    def sample(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """A random batch (the global RNG, seeded per run) as normalised images, half of them mirrored, and the
        photos' kind ids."""
        pick = torch.randperm(len(self.pixels))[: self.batch]
        images = self.pixels[pick]
        flip = torch.rand(len(pick)) < 0.5
        images[flip] = images[flip].flip(-1)
        return self.normalize(images.to(device)), self.kind[pick].to(device)

    def loss(self, photos: torch.Tensor, kinds: torch.Tensor, shop: torch.Tensor,
             shop_categories: torch.Tensor) -> torch.Tensor:
        """Multi-similarity of the photos' (N, D) normalised embeddings against the shop batch's (B, D), the
        shop photos of an accepted category as positives."""
        pos = self.accepted.to(kinds.device)[kinds][:, shop_categories]
        return multi_similarity_masked(photos @ shop.T, pos, ~pos)
