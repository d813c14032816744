"""training.parts: the geometry of part maps, the part losses, naming; and the figure-carrying augmentation."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from bench.robustness import on_clutter
from conftest import DISTRACTORS, LUMA
from mga.data import category_key, load_retrieval_data
from mga.imageio import load_image
from mga.part_names import garment_kind, names_for
from training.landmarks import LAYOUT, landmark_of, landmark_set, layout_targets, name_parts
from training.parts import (background_loss, centroids, concentration_loss, consistency_loss, effective_area,
                            figure_boxes, figure_on_grid, in_figure_box, layout_loss, mass_at_sides, mass_on_figure,
                            names_from_positions, part_geometry, spread)
from mga.colour import skin_mask, to_lab
from mga.transforms import garment_mask
from training.augment import Backgrounds, ConsumerPhotoAugment

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def one_hot_map(h: int, w: int, i: int, j: int) -> torch.Tensor:
    a = torch.zeros(h, w)
    a[i, j] = 1
    return a


def test_mass_area_centroid_and_spread_of_simple_maps():
    h = w = 8
    figure = torch.zeros(1, h, w)
    figure[0, 2:6, 2:6] = 1  # a 4x4 figure in the middle
    point_on = one_hot_map(h, w, 3, 4)
    point_off = one_hot_map(h, w, 0, 0)
    uniform = torch.full((h, w), 1 / (h * w))
    attn = torch.stack([point_on, point_off, uniform])[None]  # (1, 3, h, w)
    assert mass_on_figure(attn, figure)[0].tolist() == pytest.approx([1.0, 0.0, 16 / 64])
    assert effective_area(attn)[0].tolist() == pytest.approx([1 / 64, 1 / 64, 1.0])
    c = centroids(attn)[0]
    assert c[0].tolist() == pytest.approx([4.5 / 8, 3.5 / 8]), "(x, y) of cell row 3, column 4"
    assert c[2].tolist() == pytest.approx([0.5, 0.5])
    s = spread(attn)[0]
    assert s[0] == pytest.approx(0.0, abs=1e-7) and s[2] > 0.1, "a point is compact, a uniform map is not"


def test_figure_boxes_and_figure_box_coordinates():
    masks = torch.zeros(2, 10, 20)
    masks[0, 2:8, 5:15] = 1
    boxes = figure_boxes(masks)
    assert boxes[0].tolist() == pytest.approx([0.25, 0.2, 0.75, 0.8])
    assert boxes[1].tolist() == [0.0, 0.0, 1.0, 1.0], "an empty mask: the whole frame"
    pts = torch.tensor([[[0.25, 0.2], [0.5, 0.5]], [[0.3, 0.7], [1.0, 1.0]]])
    assert torch.allclose(in_figure_box(pts, boxes), torch.tensor([[[0, 0], [0.5, 0.5]], [[0.3, 0.7], [1, 1]]]))
    grid = figure_on_grid(masks, (5, 10))
    assert grid.shape == (2, 5, 10) and grid[0].sum() == pytest.approx(masks[0].sum() / 4)


def test_background_loss_moves_attention_onto_the_figure():
    """Gradient descent on the loss alone takes a map's mass from the background to the figure."""
    torch.manual_seed(0)
    figure = torch.zeros(2, 6, 6)
    figure[:, 1:5, 2:4] = 1
    logits = torch.randn(2, 3, 36, requires_grad=True)
    opt = torch.optim.SGD([logits], lr=5.0)
    before = mass_on_figure(logits.softmax(-1).view(2, 3, 6, 6), figure).min().item()
    for _ in range(100):
        loss = background_loss(logits.softmax(-1).view(2, 3, 6, 6), figure)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = mass_on_figure(logits.softmax(-1).view(2, 3, 6, 6), figure).min().item()
    assert before < 0.5 and after > 0.9


def test_concentration_and_consistency_losses():
    h = w = 8
    a = torch.stack([one_hot_map(h, w, 1, 1), one_hot_map(h, w, 6, 6)])[None]  # 2 compact parts
    spread_out = torch.full((1, 2, h, w), 1 / 64)
    assert concentration_loss(a) < 1e-6 < concentration_loss(spread_out)
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 3)
    same = a.expand(3, -1, -1, -1)
    moved = torch.cat([a, a, torch.stack([one_hot_map(h, w, 6, 6), one_hot_map(h, w, 1, 1)])[None]])
    assert consistency_loss(same, boxes, torch.tensor([0, 0, 0])) == pytest.approx(0.0, abs=1e-7)
    assert consistency_loss(moved, boxes, torch.tensor([0, 0, 0])) > 0.05
    assert consistency_loss(moved, boxes, torch.tensor([0, 0, 1])) == pytest.approx(0.0, abs=1e-7), \
        "only photos of one category are compared"
    assert consistency_loss(moved, boxes, torch.tensor([0, 0, -1])) == pytest.approx(0.0, abs=1e-7), \
        "close-ups (group -1) are left out"
    # the same garment region in a smaller figure box (a shorter garment) is consistent
    small = torch.tensor([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.5, 0.5]])
    scaled = torch.stack([a[0], torch.stack([one_hot_map(h, w, 0, 0), one_hot_map(h, w, 3, 3)])])
    same = torch.tensor([0, 0])
    assert consistency_loss(scaled, small, same) < consistency_loss(scaled, boxes[:2], same)


def test_a_mirror_pair_is_one_compact_part_that_sits_still_when_folded():
    """Both cuffs in one map, or a cuff on the left of one photo and the right of another: folded about the
    figure's axis, compact and consistent; unfolded, neither."""
    h = w = 8
    boxes = torch.tensor([[0.25, 0.0, 0.75, 1.0]] * 2)  # the figure's axis at x = 0.5
    both_cuffs = ((one_hot_map(h, w, 5, 2) + one_hot_map(h, w, 5, 5)) / 2)[None, None]
    assert spread(both_cuffs, boxes[:1])[0, 0] < 1e-7 < spread(both_cuffs)[0, 0]
    assert centroids(both_cuffs, boxes[:1])[0, 0].tolist() == pytest.approx([5.5 / 8, 5.5 / 8]), \
        "folded onto the figure's right half"
    left, right = one_hot_map(h, w, 5, 2), one_hot_map(h, w, 5, 5)
    swapped = torch.stack([left, right])[:, None]  # one part, front view and back view
    groups = torch.tensor([0, 0])
    assert consistency_loss(swapped, boxes, groups) == pytest.approx(0.0, abs=1e-7)
    assert consistency_loss(swapped, boxes, groups, folded=False) > 0.01
    assert concentration_loss(both_cuffs, boxes[:1]) < 1e-7 < concentration_loss(both_cuffs)
    sides = mass_at_sides(torch.stack([left, one_hot_map(h, w, 5, 4), one_hot_map(h, w, 5, 0)])[None], boxes[:1])
    assert sides[0].tolist() == pytest.approx([1.0, 0.0, 0.0]), "a cuff's column is in an outer quarter; the " \
        "middle and the background outside the box are not"


def test_layout_loss_draws_each_part_to_its_slot_and_leaves_free_slots_alone():
    torch.manual_seed(0)
    boxes = torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 2)
    targets = torch.tensor([[[0.85, 0.5], [float("nan")] * 2]] * 2)  # part 1: the sleeve; part 2: free
    logits = torch.zeros(2, 2, 100, requires_grad=True)
    opt = torch.optim.SGD([logits], lr=20.0)
    for _ in range(100):
        loss = layout_loss(logits.softmax(-1).view(2, 2, 10, 10), boxes, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    maps = logits.softmax(-1).view(2, 2, 10, 10).detach()
    sides = mass_at_sides(maps, boxes)
    assert sides[:, 0].min() > 0.5, "the sleeve slot's part moved into the outer quarters"
    assert torch.allclose(maps[:, 1], torch.full((2, 10, 10), 0.01)), "a free slot gets no gradient"
    table = layout_targets(["jackets", "pants", "shorts", "hats", "tees", "tanks"], 6)
    sleeve = LAYOUT["top"].index("sleeve / cuff")
    assert table[0, sleeve].tolist() == pytest.approx([0.85, 0.5])
    assert table[4, sleeve, 1] < 0.4, "a tee's sleeve ends high on the arm"
    assert table[2, 4].isnan().all() and table[3].isnan().all(), "a free slot, and no garment"
    assert table[5, sleeve].tolist() == pytest.approx([0.5, 0.47]), \
        "a tank has no sleeve: its sleeve slot is drawn to the front, not left to find a bare arm"
    figure = torch.ones(2, 10, 10)
    figure[:, :, 9] = 0  # the column beyond the cuff is studio background
    on_arm, beside = one_hot_map(10, 10, 5, 8), one_hot_map(10, 10, 5, 9)  # both near the landmark (0.85, 0.5)
    one = [torch.stack([m, m])[None] for m in (on_arm, beside)]  # (1, 2, 10, 10): a part at one cell
    plain = [layout_loss(m, boxes[:1], targets[:1]).item() for m in one]
    on_figure = [layout_loss(m, boxes[:1], targets[:1], figure[:1]).item() for m in one]
    assert max(plain) < 0.5, "both cells are near the cuff's landmark"
    assert on_figure[0] == pytest.approx(plain[0]) and on_figure[1] == pytest.approx(1.0), \
        "with the figure given, only mass on the garment counts"
    with pytest.raises(ValueError, match="6 part slots"):
        layout_targets(["tees"], 8)


def test_parts_are_named_by_the_nearest_landmark_of_their_kind_of_garment():
    tops = np.array([[0.5, 0.2], [0.12, 0.55], [0.5, 0.35], [0.5, 0.82], [0.9, 0.5], [0.5, 0.88]])
    names = name_parts({"tees": tops}, {"tees": "top"})
    assert names["tees"] == ["neckline", "lower sleeve / cuff", "chest", "upper hem", "upper sleeve / cuff",
                             "lower hem"], \
        "both sides are a sleeve (folded about the figure's axis, they are told apart by height); a second part " \
        "near the hem is told apart by where it sits, not named after a far landmark"
    four = name_parts({"tees": np.array([[0.5, 0.84], [0.48, 0.88], [0.52, 0.82], [0.5, 0.86]])}, {"tees": "top"})
    assert four["tees"] == ["hem 2", "hem 4", "hem 1", "hem 3"], "more than three on one landmark: numbered top down"
    assert [landmark_of(n) for n in ["lower hem", "outer sleeve / cuff", "hem 4", "hem / ankle", "neckline"]] == \
        ["hem", "sleeve / cuff", "hem", "hem / ankle", "neckline"]
    bottoms = np.array([[0.5, 0.05], [0.72, 0.2], [0.5, 0.31], [0.3, 0.43], [0.7, 0.6], [0.28, 0.9]])
    assert name_parts({"pants": bottoms}, {"pants": "bottom"})["pants"] == \
        ["waistband", "hip / pocket", "fly / crotch", "thigh", "knee", "hem / ankle"]
    assert garment_kind("Shorts") == "bottom" and garment_kind("Hoodies_Sweatshirts") == "top"
    assert [landmark_set(c) for c in ("Shorts", "Pants", "Jackets", "Tees", "Bras_Tanks")] == \
        ["short bottom", "bottom", "top", "short-sleeved top", "sleeveless top"]
    short = np.array([[0.5, 0.05], [0.72, 0.2], [0.5, 0.31], [0.7, 0.38], [0.3, 0.5], [0.7, 0.75]])
    legs = names_from_positions(np.stack([short, short]), ["Shorts", "Pants"])
    assert legs["shorts"][4] == "hem" and legs["pants"][4] != "hem", "a short's hem is mid-thigh, a trouser's not"
    assert category_key("Hoodies & Sweatshirts") == category_key("Hoodies_Sweatshirts") == "hoodies sweatshirts"
    from_positions = names_from_positions(np.stack([tops, bottoms, tops]), ["Hoodies", "Pants", "Jackets"])
    assert set(from_positions) == {"hoodies", "pants", "jackets", "*top", "*bottom"}
    assert from_positions["jackets"] == names["tees"] and from_positions["*top"] == names["tees"]
    assert from_positions["pants"] == from_positions["*bottom"] == ["waistband", "hip / pocket", "fly / crotch",
                                                                  "thigh", "knee", "hem / ankle"]
    assert names_for(from_positions, "Jackets", 6) == names["tees"]
    tee = names_from_positions(tops[None], ["Tees"])["tees"]
    assert tee[1] == "lower arm (not the garment)", "below a tee's short sleeve is a bare arm, named so"
    assert names_for(from_positions, "shorts", 6) == from_positions["*bottom"], "an unseen category: its kind's"
    assert names_for(from_positions, None, 6) == names_for({}, "Tees", 6) == [f"part {k}" for k in range(1, 7)]
    assert garment_kind("hat") == garment_kind("Shoes") == "other"
    assert names_for(from_positions, "hat", 6) == [f"part {k}" for k in range(1, 7)], \
        "no garment landmark names for a hat or shoes"


@pytest.mark.requires_shared
def test_part_geometry_on_real_photos(default_model):
    data = load_retrieval_data(LUMA)
    records = data.query[:6]
    geo = part_geometry(default_model, data.root, records, batch_size=4)
    k = default_model.config.num_parts
    assert geo["mass"].shape == (6, k) and ((geo["mass"] >= 0) & (geo["mass"] <= 1 + 1e-5)).all()
    assert geo["area"].shape == (6, k) and (geo["area"] > 0).all() and (geo["area"] <= 1 + 1e-5).all()
    assert geo["position"].shape == (6, k, 2) and np.isfinite(geo["position"]).all()
    assert geo["maps"].shape[:2] == (6, k) and geo["images"].shape[0] == 6
    # the photos' own figures: a studio photo's figure fills a good part of the frame, and the template image is
    # the figure box itself, so it is mostly not white
    assert (geo["images"].mean(axis=(1, 2, 3)) < 240).all()
    # in front of a real phone photo the model sees other pixels, but the figure is still the clean photo's
    backgrounds = sorted(DISTRACTORS.rglob("*.jpg"))[:4]
    cluttered = part_geometry(default_model, data.root, records, batch_size=4,
                              backdrop=lambda img, rng: on_clutter(img, rng, backgrounds))
    assert np.array_equal(cluttered["images"], geo["images"])
    assert not np.allclose(cluttered["mass"], geo["mass"], atol=1e-4)
    assert (cluttered["mass"].mean(0) > 0.5).all(), "the parts stay on the garment in front of clutter"


def _denormalize(x: torch.Tensor) -> Image.Image:
    px = (x * torch.tensor(STD).view(3, 1, 1) + torch.tensor(MEAN).view(3, 1, 1)).clamp(0, 1) * 255
    return Image.fromarray(px.round().byte().permute(1, 2, 0).numpy())


@pytest.mark.requires_shared
def test_augmented_figure_mask_follows_the_garment():
    """Crops, close-ups, mirroring and letterboxing move the mask with the garment, and the skin mask with the
    wearer's skin (colours off: strength 0)."""
    photo = load_image(sorted(LUMA.glob("img/MEN/Jackets/*/*front.jpg"))[0], max_side=256)
    aug = ConsumerPhotoAugment(96, MEAN, STD, strength=0.0, detail=0.5, skin=True)
    random.seed(0)
    close_ups, skin_seen = 0, 0
    for _ in range(8):
        sample = aug(photo)
        shown = _denormalize(sample.image)
        seen = torch.from_numpy(garment_mask(shown))
        iou = (seen & sample.figure).sum() / (seen | sample.figure).sum()
        assert iou > 0.85
        close_ups += sample.close_up
        assert not (sample.skin & ~sample.figure).any(), "skin is part of the figure"
        if sample.skin.sum() > 20:
            skin = torch.from_numpy(skin_mask(to_lab(np.asarray(shown)))) & seen
            assert (skin & sample.skin).sum() / (skin | sample.skin).sum() > 0.6
            skin_seen += 1
    assert 0 < close_ups < 8
    assert skin_seen > 0, "a worn jacket shows the wearer's face or hands"


@pytest.mark.requires_shared
def test_clutter_pastes_the_garment_on_real_photos(tmp_path):
    real = Backgrounds(sorted((DISTRACTORS / "validation").rglob("*.jpg"))[:4], 128)
    assert real.sample((50, 70)).size == (50, 70)
    grass = tmp_path / "grass.jpg"
    Image.new("RGB", (300, 200), (40, 160, 60)).save(grass)
    photo = load_image(sorted(LUMA.glob("img/MEN/Jackets/*/*front.jpg"))[0], max_side=256)

    def white_behind(clutter: float) -> float:
        """Median share of studio white among the non-figure pixels (letterbox padding included)."""
        aug = ConsumerPhotoAugment(96, MEAN, STD, strength=1.0, clutter=clutter, backgrounds=Backgrounds([grass], 128))
        random.seed(1)
        torch.manual_seed(1)
        shares = []
        for _ in range(8):
            sample = aug(photo)
            img = np.asarray(_denormalize(sample.image)).astype(int)
            shares.append((img > 235).all(-1)[~sample.figure.numpy()].mean())
            assert 0.05 < sample.figure.float().mean() < 0.8
        return float(np.median(shares))

    assert white_behind(0.0) > 0.6 and white_behind(1.0) < 0.35, "the studio white is gone from behind the garment"
