"""mga.kinds: the phone photos' kinds against the shop's categories, and the kind term on real photos."""
from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F

from conftest import DISTRACTORS, LUMA
from mga.imageio import load_image
from mga.kinds import KINDS, KindTerm, accepts, kind_photos

VALIDATION = DISTRACTORS / "validation"


def test_every_kind_names_categories_the_shop_has_in_any_spelling():
    shop = {p.name for p in LUMA.glob("img/*/*") if p.is_dir()}
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


def test_kind_term_reaches_the_model_through_real_photos(default_model, phone_folder):
    model = type(default_model)(default_model.config)
    model.load_state_dict(default_model.state_dict())
    model.train()
    term = KindTerm(phone_folder, model.transform, ["pants", "shorts"], batch=4)
    images, kinds = term.sample(torch.device("cpu"))
    shop_photos = [*sorted(LUMA.glob("img/MEN/Pants/*/*.jpg"))[:2], *sorted(LUMA.glob("img/MEN/Shorts/*/*.jpg"))[:2]]
    shop = torch.stack([model.transform(load_image(p)) for p in shop_photos])
    enc = model(torch.cat([images, shop]))
    loss = term.loss(enc.global_[:4], kinds, enc.global_[4:], torch.tensor([0, 0, 1, 1]))
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert model.global_proj.weight.grad.abs().sum() > 0


def test_kind_term_without_kind_folders_says_so(default_model, tmp_path):
    with pytest.raises(ValueError, match="folders named t-shirt, longsleeve"):
        KindTerm(tmp_path, default_model.transform, ["pants"], batch=4)
