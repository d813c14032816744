"""training.anchor: the frozen pretrained backbone takes its share of every similarity, on real photos."""
from __future__ import annotations

import copy

import random
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from bench.robustness import on_clutter
from conftest import DISTRACTORS
from training.anchor import main, with_anchor
from mga.config import DEFAULT_WEIGHTS_DIR, MGAConfig
from training.distill import PretrainedGeM
from mga.hub import load_model
from mga.imageio import load_image
from mga.backbones import shared_stages
from mga.model import MGAModel


@pytest.fixture(scope="module")
def bare(default_model):
    """The embedded default without its anchor: the trained model alone."""
    return with_anchor(default_model, 0.0)


def test_every_similarity_is_the_share_weighted_mix_of_mga_and_the_pretrained_descriptor(bare, luma_photos):
    images = [load_image(p) for p in luma_photos]
    anchored = with_anchor(bare, 0.3)
    before, after = bare.encode_images(images), anchored.encode_images(images)
    pre = PretrainedGeM(bare).encode(images)
    mixed = 0.7 * before.embedding @ before.embedding.T + 0.3 * pre @ pre.T
    assert torch.allclose(after.embedding @ after.embedding.T, mixed, atol=2e-3)
    ata_mixed = 0.7 * bare.align(before, before).scores + 0.3 * pre @ pre.T
    aligned = anchored.align(after, after)
    assert torch.allclose(aligned.scores, ata_mixed, atol=2e-3)
    assert torch.allclose(aligned.anchor_term, 0.3 * pre @ pre.T, atol=2e-3)  # the chart's "pretrained look"
    assert torch.allclose(aligned.global_term, 0.7 * bare.align(before, before).global_term, atol=2e-3)
    assert torch.allclose(after.attn, before.attn, atol=1e-4)  # the part maps are the model's own
    assert torch.allclose(after.embedding.norm(dim=1), torch.ones(len(images)), atol=1e-4)


def test_the_embedded_default_is_anchored_and_its_share_can_be_changed(default_model, bare, luma_photos):
    assert default_model.config.anchor == 0.5 and bare.anchor is None
    assert bare.fingerprint() != default_model.fingerprint()
    image = [load_image(luma_photos[0])]
    again = with_anchor(bare, 0.5)
    assert again.fingerprint() == default_model.fingerprint()
    assert torch.allclose(again.encode_images(image).embedding, default_model.encode_images(image).embedding,
                          atol=1e-5)


def test_anchored_checkpoint_round_trips_and_its_anchor_stays_frozen(default_model, tmp_path, luma_photos, capsys):
    main(["--weights", str(DEFAULT_WEIGHTS_DIR), "--share", "0.25", "--out", str(tmp_path / "a25")])
    loaded = load_model(str(tmp_path / "a25"))
    assert loaded.config.closeup == {} and "python -m training.closeup --weights" in capsys.readouterr().out
    assert loaded.config.anchor == 0.25 and not any(p.requires_grad for p in loaded.anchor.parameters())
    assert loaded.fingerprint() != default_model.fingerprint()
    loaded.train()
    assert not loaded.anchor.training  # its BatchNorm statistics stay the pretrained ones


def test_the_figure_pooled_anchor_describes_the_garment_not_the_room(bare, luma_photos):
    """The same garments pasted on real rooms (training-side photos): the anchor pooled over the figure moves less
    than the whole-photo GeM."""
    rooms = sorted((DISTRACTORS / "validation").rglob("*.jpg"))[:4]
    rng = random.Random(0)
    clean = [load_image(p) for p in luma_photos[:4]]
    cluttered = [on_clutter(im, rng, rooms) for im in clean]
    d = bare.config.embed_dim

    def moved(pool: str) -> torch.Tensor:
        model = with_anchor(bare, 0.5, pool)
        a, b = (F.normalize(model.encode_images(ims).global_[:, d:], dim=1) for ims in (clean, cluttered))
        return (a * b).sum(1)

    whole, figure = moved("whole"), moved("figure")
    assert (figure > whole).all(), (figure, whole)
    assert with_anchor(bare, 0.5, "figure").fingerprint() != with_anchor(bare, 0.5).fingerprint()


def test_figure_pooling_needs_a_figure_head(bare):
    headless = MGAModel(replace(bare.config, figure_head=False))
    with pytest.raises(ValueError, match="figure head"):
        with_anchor(headless, 0.5, "figure")


@pytest.mark.parametrize("share", [1.0, 1.5, -0.1])
def test_cli_refuses_a_share_outside_0_1(tmp_path, share):
    with pytest.raises(SystemExit, match=r"must lie in \[0, 1\)"):
        main(["--weights", str(DEFAULT_WEIGHTS_DIR), "--share", str(share), "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()


def test_the_anchor_shares_only_the_stages_training_left_untouched(default_model, bare):
    """The recipe freezes the stem and three blocks: the anchor runs those once with the trained backbone (the
    mix test above checks the outputs), and no stage that training changed."""
    ours, theirs = default_model.backbone.stages(), default_model.anchor.stages()
    assert shared_stages(ours, theirs) == 5  # stem, its norm, blocks 0-2
    assert default_model.config.extra["train_args"]["freeze_blocks"] == 3
    ours[0].train()
    try:
        assert shared_stages(ours, theirs) == 0  # a stage in training mode computes something else
    finally:
        ours[0].eval()


def test_the_shared_stages_are_counted_once_and_counted_again_when_the_weights_may_have_changed(default_model,
                                                                                             luma_photos):
    """Comparing the stages' weights costs a millisecond a forward: an eval-mode model remembers the count, and
    forgets it on train() and on load_state_dict(), after which it holds what the new weights share."""
    model = copy.deepcopy(default_model).eval()
    x = model.transform(load_image(luma_photos[0]))[None]
    before = model.encode(x)
    assert model._shared == (id(model.anchor), 5)
    state = model.state_dict()
    first = next(k for k in state if k.startswith("backbone.") and state[k].is_floating_point())
    state[first] = state[first] + 0.01  # the first stage no longer the pretrained one
    model.load_state_dict(state)
    assert model._shared is None
    after = model.encode(x)
    assert model._shared == (id(model.anchor), 0) and not torch.allclose(before.global_, after.global_)
    model.train()
    assert model._shared is None
    model.eval()


def test_a_fresh_anchored_model_starts_from_two_pretrained_copies():
    model = MGAModel.from_backbone(MGAConfig(anchor=0.5)).eval()
    stages = model.backbone.stages()
    assert shared_stages(stages, model.anchor.stages()) == len(stages)  # untrained: every stage still the same


def test_cli_names_weights_it_cannot_load(tmp_path):
    with pytest.raises(SystemExit, match="nowhere: neither a local checkpoint folder nor a Hub id"):
        main(["--weights", str(tmp_path / "nowhere"), "--share", "0.5", "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()
