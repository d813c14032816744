"""training.kinds: the phone photos' kinds against the shop's categories, the kind term on real photos, and its loss
against a hand-computed case."""
from __future__ import annotations

import math
import shutil

import pytest
import torch
import torch.nn.functional as F

from conftest import PHONES_MINI, SHOP_MINI
from training.kinds import KINDS, KindTerm, accepts, kind_photos
from mga.transforms import EvalTransform

VALIDATION = PHONES_MINI / "validation"  # two phone photos of each kind the shop sells, and of shoes


def test_every_kind_names_categories_the_shop_has_in_any_spelling():
    shop = {p.name for p in SHOP_MINI.glob("img/*/*") if p.is_dir()}
    assert {c for cats in KINDS.values() for c in cats} <= shop
    assert accepts("outwear", "Hoodies & Sweatshirts") and accepts("t-shirt", "bras tanks")
    assert not accepts("pants", "Shorts") and not accepts("shorts", "Pants")


def test_kind_photos_are_the_kinds_the_shop_sells_from_their_folders():
    found = kind_photos(VALIDATION)
    assert {kind for _, kind in found} == set(KINDS)
    assert all(path.parent.name == kind for path, kind in found)
    assert len(found) < len(list(VALIDATION.rglob("*.jpg")))  # shoes, dresses, hats... stay out


@pytest.fixture
def phone_folder(tmp_path):
    """Two real validation phone photos each of pants and of shorts, in the kind folders the term reads."""
    for kind in ("pants", "shorts"):
        (tmp_path / kind).mkdir()
        for path in sorted((VALIDATION / kind).glob("*.jpg"))[:2]:
            shutil.copy(path, tmp_path / kind / path.name)
    return tmp_path


def test_kind_term_samples_real_photos_and_ranks_the_photos_kind_first(default_model, phone_folder):
    categories = ["pants", "shorts", "tees"]  # the training batches' category ids 0, 1, 2
    term = KindTerm(phone_folder, default_model.transform, categories, batch=8)
    torch.manual_seed(0)
    images, kinds = term.sample(torch.device("cpu"))
    side = default_model.config.image_size
    assert images.shape == (4, 3, side, side) and images.dtype == torch.float32
    assert sorted(kinds.tolist()) == sorted([list(KINDS).index("pants")] * 2 + [list(KINDS).index("shorts")] * 2)
    # shop batch: one photo per category; each phone photo sits on its own kind's shop photo, or on the other's
    shop_categories = torch.tensor([0, 1, 2])
    shop = torch.eye(3)
    own = shop[torch.where(kinds == list(KINDS).index("pants"), 0, 1)]
    swapped = shop[torch.where(kinds == list(KINDS).index("pants"), 1, 0)]
    near = F.normalize(own + 0.3 * swapped + 0.2 * shop[2], dim=1)
    far = F.normalize(swapped + 0.3 * own + 0.2 * shop[2], dim=1)
    assert term.loss(near, kinds, shop, shop_categories) < term.loss(far, kinds, shop, shop_categories)


def sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


@pytest.fixture
def pants_and_shorts(phone_folder):
    """The kind term on the four phone photos, against a shop batch whose category ids are pants 0, shorts 1,
    tees 2 (small images: only the loss is used)."""
    return KindTerm(phone_folder, EvalTransform(32, (0.5,) * 3, (0.5,) * 3), ["pants", "shorts", "tees"], batch=4)


def test_kind_term_loss_and_gradient_hand_computed(pants_and_shorts):
    """A photo of pants and one of shorts against three shop photos (pants, shorts, tees: the unit axes), so each
    similarity is a coordinate of the photo. Pants (0.6, 0.8, 0): its positive 0.6 and the negative shorts 0.8
    are kept (0.8 + 0.1 > 0.6, 0.6 - 0.1 < 0.8), the tee at 0 is not. Shorts (0.48, 0.6, 0.64): its positive 0.6
    and the tee 0.64 are kept, the pants at 0.48 are not (0.48 + 0.1 < 0.6). The loss is the mean of the two
    photos' log(1 + e^(-a (s+ - b))) / a + log(1 + e^(B (s- - b))) / B; its derivative along a kept similarity is
    -sigmoid(-a (s+ - b)) / 2 or sigmoid(B (s- - b)) / 2, zero along the others."""
    a, b, base = 2.0, 50.0, 0.5
    kinds = torch.tensor([list(KINDS).index("pants"), list(KINDS).index("shorts")])
    photos = torch.tensor([[0.6, 0.8, 0.0], [0.48, 0.6, 0.64]], requires_grad=True)
    shop = torch.eye(3, requires_grad=True)
    loss = pants_and_shorts.loss(photos, kinds, shop, torch.tensor([0, 1, 2]))
    pos = math.log1p(math.exp(-a * (0.6 - base))) / a
    expected = (pos + math.log1p(math.exp(b * (0.8 - base))) / b + pos + math.log1p(math.exp(b * (0.64 - base))) / b)
    assert loss.item() == pytest.approx(expected / 2, rel=1e-6)

    loss.backward()
    d_pos = -sigmoid(-a * (0.6 - base)) / 2
    d_sim = [[d_pos, sigmoid(b * (0.8 - base)) / 2, 0.0],  # d loss / d (photo i . shop j)
             [0.0, d_pos, sigmoid(b * (0.64 - base)) / 2]]
    assert photos.grad.tolist() == [pytest.approx(row, abs=1e-6) for row in d_sim]  # shop photos: the unit axes
    shop_grad = [[sum(d_sim[i][j] * photos[i, c].item() for i in range(2)) for c in range(3)] for j in range(3)]
    assert shop.grad.tolist() == [pytest.approx(row, abs=1e-6) for row in shop_grad]


def test_kind_term_gradient_matches_finite_differences(pants_and_shorts):
    """torch.autograd.gradcheck in float64 over both the photos' and the shop's embeddings, away from the mining
    margins (a step of 1e-3 keeps the same pairs); the loss computes in float32, hence the tolerance."""
    kinds = torch.tensor([list(KINDS).index("pants"), list(KINDS).index("shorts")])
    photos = torch.tensor([[0.6, 0.8, 0.0], [0.48, 0.6, 0.64]], dtype=torch.float64, requires_grad=True)
    shop = torch.tensor([[1.0, 0.1, 0.0], [0.0, 1.0, 0.2], [0.1, 0.0, 1.0]], dtype=torch.float64, requires_grad=True)
    categories = torch.tensor([0, 1, 2])
    loss = lambda p, s: pants_and_shorts.loss(p, kinds, s, categories)  # noqa: E731
    assert loss(photos, shop).item() > 0.1
    assert torch.autograd.gradcheck(loss, (photos, shop), eps=1e-3, atol=2e-4, rtol=1e-3)


def test_kind_term_without_kind_folders_says_so(default_model, tmp_path):
    with pytest.raises(ValueError, match="folders named t-shirt, longsleeve"):
        KindTerm(tmp_path, default_model.transform, ["pants"], batch=4)
