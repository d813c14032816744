"""Training augmentation: shop photos made to look like shoppers' photos (clutter, crops, tilt, colour casts,
blur, JPEG), each with its clean twin for the robustness term (training.robust)."""
from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps
from torchvision.transforms import v2 as T

from mga.colour import skin_mask, to_lab
from mga.imageio import load_image
from mga.transforms import WHITE, Normalize, garment_mask, letterbox


def detail_box(img: Image.Image, mask: np.ndarray, tries: int = 5) -> tuple[int, int, int, int] | None:
    """A close-up of one region of the garment (a pocket, a cuff, a waistband): 25-55% of the garment's
    width, the way shop "additional" views and shoppers' detail photos show it. The centre is a garment pixel
    (`mask`) below the top 15% of the figure (where a wearer's head would be); boxes that are mostly background
    are redrawn, and after `tries` there is none (None)."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    body = ys >= y0 + 0.15 * (y1 - y0)
    ys, xs = ys[body], xs[body]
    for _ in range(tries):
        w = min(img.width, max(8, int((x1 - x0) * random.uniform(0.25, 0.55))))
        h = min(img.height, max(8, int(w * random.uniform(0.8, 1.25))))
        i = random.randrange(len(xs))
        left = int(min(max(xs[i] - w / 2, 0), img.width - w))
        top = int(min(max(ys[i] - h / 2, 0), img.height - h))
        if mask[top : top + h, left : left + w].mean() >= 0.5:
            return left, top, left + w, top + h
    return None


class Backgrounds:
    """Real photos to paste garments onto (decoded once per process, reduced to `max_side`): the clutter a
    shopper's photo has behind the garment. Only ever the training side of a data set's distractors."""

    def __init__(self, paths: Sequence[Path], max_side: int):
        self.paths, self.max_side = list(paths), max_side
        self._cache: dict[int, Image.Image] = {}

    def __len__(self) -> int:
        return len(self.paths)

    def sample(self, size: tuple[int, int]) -> Image.Image:
        """A random photo, randomly cropped to the aspect of `size` and resized to it."""
        i = random.randrange(len(self.paths))
        if i not in self._cache:
            self._cache[i] = load_image(self.paths[i], max_side=self.max_side)
        bg = self._cache[i]
        w, h = size
        scale = min(bg.width / w, bg.height / h) * random.uniform(0.6, 1.0)
        cw, ch = max(1, int(w * scale)), max(1, int(h * scale))
        x, y = random.randint(0, bg.width - cw), random.randint(0, bg.height - ch)
        return bg.crop((x, y, x + cw, y + ch)).resize(size, Image.BILINEAR)


def each(op: Callable[[Image.Image], Image.Image], *images: Image.Image | None) -> tuple[Image.Image | None, ...]:
    """`op` applied to each image that is there: one geometric step for a photo and the layers that follow it."""
    return tuple(None if im is None else op(im) for im in images)


TWINS = ("framed", "whole")  # what the clean twin of a spoilt training photo shows (ConsumerPhotoAugment)


class TrainSample(NamedTuple):
    """One augmented training photo (a batch of them, once collated): the model input, its figure mask (the
    garment's pixels, wherever the augmentations moved them), whether it is a close-up (its figure box is
    not the garment's), and the figure's skin (read off the studio photo's colours before any augmentation)."""

    image: torch.Tensor  # (3, S, S) normalised
    figure: torch.Tensor  # (S, S) bool
    close_up: bool
    clean: torch.Tensor  # (3, S, S) normalised: the studio photo unspoilt (`twin`); (0,) without
    skin: torch.Tensor  # (S, S) bool: the wearer's skin within the figure (all False unless asked for)


class ConsumerPhotoAugment:
    """Turn a clean studio photo into something a shopper might take: partial crops, close-ups of a detail,
    tilt, colour casts, clutter behind the garment (real photos when `backgrounds` are given), blur and JPEG
    artefacts, a low-resolution phone or messaging-app copy (`degrade`: shrunk, heavily compressed, enlarged
    back), and carry the garment's mask through every geometric step. With probability `shopper` a photo gets
    all of them at once (a new background, a tighter crop, tilt, stronger blur, a low-resolution copy), as a
    real shopper's photo has them; drawn one by one they almost never coincide. Colour jitter is strong on
    purpose: an In-shop item mixes colourways, so the embedding must learn the garment's cut, not its dye.
    With `twin` each sample also carries its clean twin, what a clean-photo teacher sees of it (training.robust):
    "framed", the studio photo through the same crops, flips and tilt but nothing else; "whole", through the same
    close-up and flip only, the garment as the shop shows it however little of it the spoilt photo keeps.
    With `skin` each sample's figure mask comes with the wearer's skin in it (training's skin term); without, that
    mask is empty and the photo's colours are not read."""

    def __init__(self, size: int, mean: tuple[float, ...], std: tuple[float, ...], strength: float = 1.0,
                 detail: float = 0.0, clutter: float = 0.3, backgrounds: Backgrounds | None = None,
                 degrade: float = 0.0, shopper: float = 0.0, twin: str | None = None, skin: bool = False):
        if twin not in (None, *TWINS):
            raise ValueError(f"twin {twin!r}: one of {', '.join(TWINS)}")
        self.size, self.strength, self.detail, self.clutter, self.degrade = size, strength, detail, clutter, degrade
        self.shopper, self.twin, self.skin = shopper, twin, skin
        self.backgrounds = backgrounds
        self.normalize = Normalize(mean, std)
        self.color = T.ColorJitter(0.4 * strength, 0.4 * strength, 0.4 * strength, 0.1 * strength)
        self.gray = T.RandomGrayscale(0.2 * strength)

    def _background(self, size: tuple[int, int]) -> Image.Image:
        """A real photo (two times in three, when there are any), a flat colour or a coarse noise texture."""
        if self.backgrounds and random.random() < 2 / 3:
            return self.backgrounds.sample(size)
        if random.random() < 0.5:
            return Image.new("RGB", size, tuple(random.randint(0, 255) for _ in range(3)))
        noise = torch.randint(0, 256, (3, max(1, size[1] // 16), max(1, size[0] // 16)), dtype=torch.uint8)
        return T.functional.to_pil_image(noise).resize(size, Image.BILINEAR)

    def _clutter(self, img: Image.Image, figure: Image.Image) -> Image.Image:
        """Replace the white studio background with another, the garment's edge softened."""
        soft = figure.getchannel(0).filter(ImageFilter.MaxFilter(3)).filter(ImageFilter.GaussianBlur(2))
        return Image.composite(img, self._background(img.size), soft)

    @staticmethod
    def _low_resolution(img: Image.Image) -> Image.Image:
        """A small, heavily compressed copy enlarged back: what a forwarded or thumbnailed photo looks like."""
        small = img.resize((max(8, int(img.width * random.uniform(0.25, 0.6))),
                            max(8, int(img.height * random.uniform(0.25, 0.6)))),
                           random.choice([Image.BILINEAR, Image.BICUBIC, Image.BOX]))
        buf = io.BytesIO()
        small.save(buf, "JPEG", quality=random.randint(8, 50))
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB").resize(img.size, Image.BICUBIC)

    def _frame(self, op: Callable[[Image.Image], Image.Image], img: Image.Image, clean: Image.Image | None
               ) -> tuple[Image.Image, Image.Image | None]:
        """A framing step (partial crop, tilt) on the spoilt photo, and on its clean twin only when the twin is
        "framed": the "whole" twin shows the garment as the shop does."""
        return op(img), (op(clean) if self.twin == "framed" else clean)

    def __call__(self, img: Image.Image) -> TrainSample:
        s = self.strength
        # no draw when off: recipes without shopper photos replay exactly
        shopper = bool(self.shopper) and random.random() < self.shopper

        def happens(p: float) -> bool:
            return shopper or random.random() < p

        mask = garment_mask(img)
        skin = mask & skin_mask(to_lab(np.asarray(img))) if self.skin else np.zeros_like(mask)
        # the figure (channel 0) and its skin (channel 1) go through every geometric step as one image
        figure = Image.fromarray(np.stack([mask, skin, np.zeros_like(mask)], -1).astype(np.uint8) * 255)
        box = detail_box(img, mask) if random.random() < self.detail else None
        if box is not None:  # before clutter: the crop looks for the garment on its white background
            img, figure = img.crop(box), figure.crop(box)
        clean = img if self.twin else None
        if happens(self.clutter * s):
            img = self._clutter(img, figure)
        if random.random() < 0.5:
            img, figure, clean = each(ImageOps.mirror, img, figure, clean)
        # partial crop of the garment (keep most of it: retrieval still needs the item)
        if box is None and happens(0.6 * s):
            w, h = img.size
            scale = random.uniform(0.45 if shopper else 0.6, 1.0)
            cw, ch = int(w * random.uniform(scale, 1.0)), int(h * random.uniform(scale, 1.0))
            x0, y0 = random.randint(0, w - cw), random.randint(0, h - ch)
            cut = (x0, y0, x0 + cw, y0 + ch)
            figure = figure.crop(cut)
            img, clean = self._frame(lambda im: im.crop(cut), img, clean)
        figure = letterbox(figure, self.size, fill=(0, 0, 0))
        img, clean = each(lambda im: letterbox(im, self.size), img, clean)
        if happens(0.5 * s):
            angle = random.uniform(-15, 15)
            figure = figure.rotate(angle, resample=Image.BILINEAR, fillcolor=(0, 0, 0))
            img, clean = self._frame(lambda im: im.rotate(angle, resample=Image.BILINEAR, fillcolor=WHITE), img, clean)
        img = self.gray(self.color(img))
        if happens(0.2 * s):
            img = img.filter(ImageFilter.GaussianBlur(random.uniform(0.3, 2.5 if shopper else 1.5)))
        if random.random() < 0.3 * s:
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=random.randint(20, 70))
            img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB")
        if shopper or (self.degrade and random.random() < self.degrade):  # no draw when off, as above
            img = self._low_resolution(img)
        masks = torch.from_numpy(np.asarray(figure)[..., :2] > 127)
        return TrainSample(self.normalize(img), masks[..., 0], box is not None,
                           torch.zeros(0) if clean is None else self.normalize(clean), masks[..., 1])
