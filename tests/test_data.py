"""mga.data on the real DeepFashion layouts (In-shop, Consumer-to-shop) written in tmp_path, and on Luma."""
from __future__ import annotations

import random
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from conftest import LUMA, LUMA_TINY
from mga.data import detect_format, load_consumer2shop, load_inshop, load_retrieval_data
from mga.imageio import bicubic_pixels, load_image
from mga.transforms import EvalTransform, garment_mask, letterbox, letterbox_box, letterbox_pixels
from training.augment import ConsumerPhotoAugment, detail_box
from training.batches import ImageDataset, PKSampler, training_halves

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def tiny_photos(n: int) -> list[Path]:
    photos = sorted(LUMA_TINY.glob("img/*/*/*/*.jpg"))
    assert len(photos) >= n
    return photos[:: len(photos) // n][:n]


def write_partition(root: Path, header: str, rows: list[str], count: int | None = None) -> None:
    (root / "Eval").mkdir(parents=True, exist_ok=True)
    lines = [str(len(rows) if count is None else count), header, *rows]
    (root / "Eval" / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")


INSHOP_HEADER = "image_name item_id evaluation_status"
C2S_HEADER = "image_pair_name_1 image_pair_name_2 item_id evaluation_status"


@pytest.fixture
def inshop_root(tmp_path) -> Path:
    """4 items x 2 photos: items 1-2 train, items 3-4 test (one query + one gallery photo each)."""
    root = tmp_path / "inshop"
    photos = tiny_photos(8)
    rows = []
    statuses = ["train", "train", "train", "train", "query", "gallery", "query", "gallery"]
    for i, (photo, status) in enumerate(zip(photos, statuses)):
        item = f"id_{i // 2 + 1:08d}"
        rel = f"img/WOMEN/Dresses/{item}/{i % 2 + 1:02d}_1_front.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, root / rel)
        rows.append(f"{rel} {item} {status}")
    write_partition(root, INSHOP_HEADER, rows)
    return root


def c2s_rows() -> list[tuple[str, str, str, str]]:
    """Pairs in the real Consumer-to-shop spelling (`comsumer`); shop photos are shared between pairs."""
    rows = []
    specs = [  # item, consumer n, shop n, status
        (1, 1, 1, "train"), (1, 2, 1, "train"), (2, 1, 1, "train"),
        (3, 1, 1, "val"),
        (4, 1, 1, "test"), (4, 2, 1, "test"), (4, 2, 2, "test"),  # consumer 02 appears twice, shop 01 twice
        (5, 1, 1, "test"),
    ]
    for item, c, s, status in specs:
        d = f"img/CLOTHING/Blouse/id_{item:08d}"
        rows.append((f"{d}/comsumer_{c:02d}.jpg", f"{d}/shop_{s:02d}.jpg", f"id_{item:08d}", status))
    return rows


@pytest.fixture
def c2s_root(tmp_path) -> Path:
    root = tmp_path / "c2s"
    rows = c2s_rows()
    paths = sorted({p for r in rows for p in r[:2]})
    for photo, rel in zip(tiny_photos(len(paths)), paths):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, root / rel)
    write_partition(root, C2S_HEADER, [" ".join(r) for r in rows])
    return root


# --- In-shop -----------------------------------------------------------------------------------------------

def test_inshop_layout(inshop_root):
    assert detect_format(inshop_root) == "inshop"
    data = load_retrieval_data(inshop_root)
    assert data.format == "inshop" and data.root == inshop_root
    assert (len(data.train), len(data.query), len(data.gallery)) == (4, 2, 2)
    assert {r.item_id for r in data.train} == {"id_00000001", "id_00000002"}
    assert [r.item_id for r in data.query] == ["id_00000003", "id_00000004"]
    assert [r.item_id for r in data.gallery] == ["id_00000003", "id_00000004"]
    assert all(r.split == "query" for r in data.query)
    assert all((inshop_root / r.path).is_file() for r in data.train + data.query + data.gallery)


def test_inshop_wrong_count_line_raises(inshop_root):
    part = inshop_root / "Eval" / "list_eval_partition.txt"
    lines = part.read_text().splitlines()
    part.write_text("\n".join(["9", *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match="9"):
        load_inshop(inshop_root)


def test_missing_partition_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="list_eval_partition"):
        load_retrieval_data(tmp_path, "inshop")
    with pytest.raises(FileNotFoundError, match="list_eval_partition"):
        load_consumer2shop(tmp_path)


def test_missing_partition_file_when_detecting_format(tmp_path):
    with pytest.raises(FileNotFoundError, match="list_eval_partition"):
        load_retrieval_data(tmp_path)


def test_unknown_header_and_format(tmp_path, inshop_root):
    write_partition(tmp_path, "a b", ["x y"])
    with pytest.raises(ValueError, match="neither"):
        detect_format(tmp_path)
    with pytest.raises(ValueError, match="unknown format"):
        load_retrieval_data(inshop_root, "street2shop")


# --- Consumer-to-shop --------------------------------------------------------------------------------------

def test_consumer2shop_layout(c2s_root):
    assert detect_format(c2s_root) == "consumer2shop"
    data = load_retrieval_data(c2s_root)
    rows = c2s_rows()
    assert data.format == "consumer2shop"
    test = [r for r in rows if r[3] == "test"]
    # query = unique test consumer photos, gallery = unique test shop photos, each once, in file order
    assert [r.path for r in data.query] == list(dict.fromkeys(r[0] for r in test))
    assert [r.path for r in data.gallery] == list(dict.fromkeys(r[1] for r in test))
    assert len(data.query) == 3 and len(data.gallery) == 3
    assert all("comsumer_" in r.path for r in data.query) and all("shop_" in r.path for r in data.gallery)
    assert {r.item_id for r in data.query} == {"id_00000004", "id_00000005"}
    # train holds both sides of every train pair, each photo once; val and test stay out of it
    train_paths = [r.path for r in data.train]
    assert len(train_paths) == len(set(train_paths))
    expected = {p for r in rows if r[3] == "train" for p in r[:2]}
    assert set(train_paths) == expected and len(train_paths) == 5
    assert any("comsumer_" in p for p in train_paths) and any("shop_" in p for p in train_paths)
    assert not any("id_00000003" in p or "id_00000004" in p for p in train_paths)
    assert all((c2s_root / r.path).is_file() for r in data.train + data.query + data.gallery)


def test_consumer2shop_val_split(c2s_root):
    data = load_consumer2shop(c2s_root, eval_split="val")
    assert [r.item_id for r in data.query] == ["id_00000003"] and len(data.gallery) == 1


def test_consumer2shop_wrong_count_line_raises(c2s_root):
    part = c2s_root / "Eval" / "list_eval_partition.txt"
    lines = part.read_text().splitlines()
    part.write_text("\n".join([str(len(lines)), *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match="rows"):
        load_retrieval_data(c2s_root)


# --- the real Luma data ------------------------------------------------------------------------------------

@pytest.mark.requires_shared
@pytest.mark.parametrize("root", [LUMA, LUMA_TINY], ids=["luma", "luma-tiny"])
def test_luma_partition(root):
    data = load_retrieval_data(root)
    assert data.format == "inshop"
    assert (len(data.train), len(data.query), len(data.gallery)) == (341, 142, 183)
    test_items = {r.item_id for r in data.query} | {r.item_id for r in data.gallery}
    assert len(test_items) == 72
    assert {r.item_id for r in data.query} <= {r.item_id for r in data.gallery}, "every query needs a gallery match"
    assert not test_items & {r.item_id for r in data.train}, "train and test items must be disjoint"


@pytest.mark.requires_shared
def test_training_halves_deal_each_items_photos_to_the_shop_and_the_queries():
    train = load_retrieval_data(LUMA).train
    queries, shop = training_halves(train)
    assert (len(queries), len(shop)) == (146, 195)
    assert sorted(queries + shop, key=train.index) == train  # every training photo once
    assert {r.item_id for r in queries} <= {r.item_id for r in shop}, "every query needs a shop photo"
    per_item = Counter(r.item_id for r in train)
    assert all(per_item[i] - n in (n, n + 1) for i, n in Counter(r.item_id for r in queries).items())
    assert all(r.split == "train" for r in queries + shop)


# --- PKSampler ---------------------------------------------------------------------------------------------

def luma_labels() -> list[int]:
    return ImageDataset(LUMA_TINY, load_retrieval_data(LUMA_TINY).train, EvalTransform(32, MEAN, STD)).labels


def test_pk_batches_have_p_items_of_k_images():
    labels = luma_labels()
    p, k = 8, 4
    sampler = PKSampler(labels, p, k, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == len(labels) // (p * k)
    for batch in batches:
        assert len(batch) == p * k
        counts = Counter(labels[i] for i in batch)
        assert len(counts) == p and set(counts.values()) == {k}


def test_pk_sampler_repeats_images_of_small_items():
    labels = [0, 1, 1, 2, 2, 2, 2, 2]  # item 0 has one image, fewer than K
    for seed in range(5):
        for batch in PKSampler(labels, 3, 2, seed=seed):
            counts = Counter(labels[i] for i in batch)
            assert counts == {0: 2, 1: 2, 2: 2}
            assert len(set(i for i in batch if labels[i] == 2)) == 2  # enough images: no repetition


def test_pk_sampler_is_deterministic_per_seed_and_epoch():
    labels = luma_labels()
    a, b = PKSampler(labels, 4, 2, seed=7), PKSampler(labels, 4, 2, seed=7)
    random.seed(123)  # the global RNG must not matter
    first = list(a)
    random.seed(999)
    assert list(b) == first
    a.set_epoch(1)
    second = list(a)
    assert second != first
    b.set_epoch(1)
    assert list(b) == second
    assert list(PKSampler(labels, 4, 2, seed=8)) != first


def test_pk_sampler_rejects_more_items_than_exist():
    with pytest.raises(ValueError, match="P=4"):
        PKSampler([0, 0, 1, 1, 2, 2], p=4, k=2)


# --- datasets and transforms -------------------------------------------------------------------------------

def test_image_dataset_with_eval_transform(inshop_root):
    data = load_inshop(inshop_root)
    ds = ImageDataset(data.root, data.train, EvalTransform(64, MEAN, STD))
    assert len(ds) == 4
    assert ds.labels == [0, 0, 1, 1]
    x, y = ds[2]
    assert isinstance(x, torch.Tensor) and x.shape == (3, 64, 64) and x.dtype == torch.float32
    assert y == 1
    assert torch.isfinite(x).all() and x.std() > 0.1
    # letterbox padding is white: normalised white in the corner, per channel
    white = torch.tensor([(1 - m) / s for m, s in zip(MEAN, STD)])
    img = ds.image(2)
    if img.width != img.height:
        assert torch.allclose(x[:, 0, 0], white, atol=1e-4)
    assert torch.equal(ds[2][0], x), "the eval transform is deterministic"


@pytest.mark.requires_shared
def test_letterbox_centres_the_whole_image_on_white():
    photo = load_image(sorted(LUMA.glob("img/MEN/Jackets/*/*front.jpg"))[0], max_side=576)
    wide = photo.crop((0, 100, photo.width, 100 + photo.width // 2))  # twice as wide as high
    out = letterbox_pixels(wide, 96)
    left, top, w, h = letterbox_box(wide.width, wide.height, 96)
    assert out.shape == (3, 96, 96) and out.dtype == torch.uint8 and (left, top, w, h) == (0, 24, 96, 48)
    assert torch.equal(out[:, top:top + h, left:left + w], bicubic_pixels(wide, (w, h))), "the whole image, resized"
    assert (out[:, :top] == 255).all() and (out[:, top + h:] == 255).all(), "white above and below"
    assert torch.equal(torch.from_numpy(np.array(letterbox(wide, 96))).permute(2, 0, 1), out), "the PIL form agrees"


def test_image_dataset_cache_downscales(inshop_root):
    data = load_inshop(inshop_root)
    ds = ImageDataset(data.root, data.train, EvalTransform(32, MEAN, STD), max_side=40, cache=True)
    img = ds.image(0)
    assert max(img.size) <= 40 and ds.image(0) is img


def test_consumer_photo_augment_shape_and_difference():
    photo = ImageDataset(LUMA_TINY, load_retrieval_data(LUMA_TINY).train[:1], EvalTransform(64, MEAN, STD)).image(0)
    aug = ConsumerPhotoAugment(64, MEAN, STD)
    clean = EvalTransform(64, MEAN, STD)(photo)
    random.seed(0)
    torch.manual_seed(0)
    outs = [aug(photo).image for _ in range(4)]
    for out in outs:
        assert out.shape == (3, 64, 64) and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert any(not torch.allclose(out, clean, atol=1e-3) for out in outs)
    assert not torch.allclose(outs[0], outs[1], atol=1e-3), "augmentations vary from call to call"
    random.seed(0)
    torch.manual_seed(0)
    again = aug(photo).image
    assert torch.equal(again, outs[0]), "seeded augmentation is reproducible"


def test_augment_strength_zero_equals_eval_transform():
    photo = ImageDataset(LUMA_TINY, load_retrieval_data(LUMA_TINY).train[:1], EvalTransform(64, MEAN, STD)).image(0)
    aug = ConsumerPhotoAugment(64, MEAN, STD, strength=0.0)
    clean = EvalTransform(64, MEAN, STD)(photo)
    random.seed(1)
    torch.manual_seed(1)
    outs = [aug(photo).image for _ in range(6)]
    # with strength 0 only the random mirror remains
    from PIL import ImageOps

    mirrored = EvalTransform(64, MEAN, STD)(ImageOps.mirror(photo))
    for out in outs:
        assert torch.allclose(out, clean, atol=1e-5) or torch.allclose(out, mirrored, atol=1e-5)
    assert any(torch.allclose(out, clean, atol=1e-5) for out in outs)


@pytest.mark.requires_shared
def test_detail_crop_is_a_close_up_of_the_garment():
    photo = load_image(sorted(LUMA.glob("img/MEN/Jackets/*/*front.jpg"))[0], max_side=576)
    mask = garment_mask(photo)
    xs = mask.any(0).nonzero()[0]
    garment_width = xs.max() - xs.min() + 1
    random.seed(0)
    for _ in range(20):
        crop = photo.crop(detail_box(photo, mask))
        assert 0.25 * garment_width - 1 <= crop.width <= 0.55 * garment_width + 1
        assert garment_mask(crop).mean() >= 0.5, "a close-up shows garment, not studio background"


def test_detail_box_of_a_blank_image_is_none():
    blank = Image.new("RGB", (200, 300), "white")
    assert detail_box(blank, garment_mask(blank)) is None


@pytest.mark.requires_shared
def test_augment_with_detail_one_always_zooms_in():
    photo = load_image(sorted(LUMA.glob("img/MEN/Jackets/*/*front.jpg"))[0], max_side=128)
    clean = EvalTransform(64, MEAN, STD)(photo)
    white = EvalTransform(64, MEAN, STD)(Image.new("RGB", (64, 64), "white"))
    aug = ConsumerPhotoAugment(64, MEAN, STD, strength=0.0, detail=1.0)
    clean_background = torch.isclose(clean, white, atol=0.05).all(0).float().mean()
    random.seed(0)
    for _ in range(5):
        sample = aug(photo)
        assert sample.close_up
        assert torch.isclose(sample.image, white, atol=0.05).all(0).float().mean() < 0.75 * clean_background


@pytest.mark.requires_shared
def test_shopper_photo_has_every_corruption_at_once():
    """strength 0 turns every single augmentation off, so what changes comes from the shopper photo alone: the
    studio white is gone (a new background), and the garment is softer (blur and a low-resolution copy)."""
    photo = load_image(sorted(LUMA.glob("img/MEN/Jackets/*/*front.jpg"))[0], max_side=256)
    transform = EvalTransform(128, MEAN, STD)
    white = transform(Image.new("RGB", (128, 128), "white"))

    def detail(x: torch.Tensor) -> float:  # mean absolute Laplacian: what blur and low resolution take away
        return (4 * x[:, 1:-1, 1:-1] - x[:, :-2, 1:-1] - x[:, 2:, 1:-1] - x[:, 1:-1, :-2] - x[:, 1:-1, 2:]).abs().mean()

    clean = transform(photo)
    plain = ConsumerPhotoAugment(128, MEAN, STD, strength=0.0, degrade=0.0, shopper=0.0)
    shopper = ConsumerPhotoAugment(128, MEAN, STD, strength=0.0, degrade=0.0, shopper=1.0)
    random.seed(0)
    torch.manual_seed(0)
    def whiteness(x: torch.Tensor) -> float:  # share of studio-white pixels (background and letterbox bars)
        return torch.isclose(x, white, atol=0.05).all(0).float().mean()

    for _ in range(8):
        assert whiteness(plain(photo).image) == whiteness(clean) > 0.5
        sample = shopper(photo)
        assert whiteness(sample.image) < 0.5 * whiteness(clean)
        assert detail(sample.image) < 0.8 * detail(clean)
        assert 0.05 < sample.figure.float().mean() < 0.95, "the garment's mask travels with the photo"


def test_learning_rate_warms_up_linearly_then_decays_to_zero():
    from training.train import lr_factor

    assert [lr_factor(s, 100, 4) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, 100, 4) == 1.0 and abs(lr_factor(52, 100, 4) - 0.5) < 1e-9
    assert lr_factor(100, 100, 4) == 0.0
    decay = [lr_factor(s, 100, 4) for s in range(4, 101)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))


def drawn(augment: ConsumerPhotoAugment, photo: Image.Image, seed: int):
    """`augment`'s sample of `photo` from a fixed seed: two augmenters' samples drawn alike."""
    random.seed(seed)
    torch.manual_seed(seed)
    return augment(photo)


@pytest.mark.requires_shared
def test_clean_twin_shares_the_framing_and_nothing_else():
    """`twin`: the studio photo goes through the spoilt photo's crop, flip and tilt only, so the twin's garment
    lies where the spoilt photo's mask says and its background stays studio white, while the spoilt photo has a
    new background; without `twin` the sample carries an empty tensor and the same random draws."""
    photo = load_image(sorted(LUMA.glob("img/MEN/Jackets/*/*front.jpg"))[0], max_side=256)
    transform = EvalTransform(128, MEAN, STD)
    white = transform(Image.new("RGB", (128, 128), "white"))
    twin = ConsumerPhotoAugment(128, MEAN, STD, strength=1.0, detail=0.3, shopper=1.0, twin="framed")
    plain = ConsumerPhotoAugment(128, MEAN, STD, strength=1.0, detail=0.3, shopper=1.0)
    for seed in range(6):
        sample, other = drawn(twin, photo, seed), drawn(plain, photo, seed)
        assert torch.equal(other.image, sample.image) and other.clean.numel() == 0
        garment = ~torch.isclose(sample.clean, white, atol=0.05).all(0)
        iou = (garment & sample.figure).sum() / (garment | sample.figure).sum()
        assert iou > 0.8, f"seed {seed}: the twin's garment is not where the mask is (IoU {iou:.2f})"
        spoilt_white = torch.isclose(sample.image, white, atol=0.05).all(0)
        assert spoilt_white[~sample.figure].float().mean() < 0.5  # a new background behind the spoilt photo


@pytest.mark.requires_shared
def test_whole_twin_is_the_uncropped_studio_photo_and_changes_no_draw():
    """`twin="whole"`: however the spoilt photo was cropped and tilted, its twin is the studio photo letterboxed
    whole (mirrored with it), and the spoilt photo is the one a framed twin's sample has."""
    photo = load_image(sorted(LUMA.glob("img/WOMEN/Tees/*/*front.jpg"))[0], max_side=256)
    whole = ConsumerPhotoAugment(128, MEAN, STD, strength=1.0, shopper=1.0, twin="whole")
    framed = ConsumerPhotoAugment(128, MEAN, STD, strength=1.0, shopper=1.0, twin="framed")
    shop = [whole.normalize(letterbox(p, 128)) for p in (photo, ImageOps.mirror(photo))]
    for seed in range(4):
        sample, other = drawn(whole, photo, seed), drawn(framed, photo, seed)
        assert torch.equal(sample.image, other.image)
        assert any(torch.equal(sample.clean, s) for s in shop), f"seed {seed}: the twin is not the whole photo"
        assert not any(torch.equal(other.clean, s) for s in shop)  # a shopper's photo is always cropped
    with pytest.raises(ValueError, match="twin 'half'"):
        ConsumerPhotoAugment(128, MEAN, STD, twin="half")
