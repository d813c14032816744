"""mga.anchor: the frozen pretrained backbone takes its share of every similarity, on real photos."""
from __future__ import annotations

import pytest
import torch

from mga.anchor import add_anchor, main
from mga.config import DEFAULT_WEIGHTS_DIR
from mga.distill import PretrainedGeM
from mga.hub import load_model
from mga.imageio import load_image


@pytest.fixture(scope="module")
def anchored(default_model):
    return add_anchor(default_model, 0.5)


def test_every_similarity_is_the_share_weighted_mix_of_mga_and_the_pretrained_descriptor(default_model, anchored,
                                                                                          luma_photos):
    images = [load_image(p) for p in luma_photos]
    before, after = default_model.encode_images(images), anchored.encode_images(images)
    pre = PretrainedGeM(default_model).encode(images)
    mixed = 0.5 * before.embedding @ before.embedding.T + 0.5 * pre @ pre.T
    assert torch.allclose(after.embedding @ after.embedding.T, mixed, atol=2e-3)
    ata_mixed = 0.5 * default_model.align(before, before).scores + 0.5 * pre @ pre.T
    assert torch.allclose(anchored.align(after, after).scores, ata_mixed, atol=2e-3)
    assert torch.allclose(after.attn, before.attn, atol=1e-4)  # the part maps are the model's own
    assert torch.allclose(after.embedding.norm(dim=1), torch.ones(len(images)), atol=1e-4)


def test_anchored_checkpoint_round_trips_with_its_own_fingerprint(default_model, anchored, tmp_path, luma_photos):
    main(["--weights", str(DEFAULT_WEIGHTS_DIR), "--share", "0.5", "--out", str(tmp_path / "a50")])
    loaded = load_model(str(tmp_path / "a50"))
    assert loaded.config.anchor == 0.5 and not any(p.requires_grad for p in loaded.anchor.parameters())
    image = [load_image(luma_photos[0])]
    assert torch.allclose(loaded.encode_images(image).embedding, anchored.encode_images(image).embedding,
                          atol=1e-5)
    assert loaded.fingerprint() == anchored.fingerprint() != default_model.fingerprint()
    loaded.train()
    assert not loaded.anchor.training  # its BatchNorm statistics stay the pretrained ones


@pytest.mark.parametrize("share, says", [(1.5, "strictly between 0 and 1"), (0.0, "strictly between 0 and 1")])
def test_cli_refuses_a_share_outside_0_1(tmp_path, share, says):
    with pytest.raises(SystemExit, match=says):
        main(["--weights", str(DEFAULT_WEIGHTS_DIR), "--share", str(share), "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()


def test_an_anchored_model_gets_no_second_anchor(anchored):
    with pytest.raises(ValueError, match="already has an anchor"):
        add_anchor(anchored, 0.3)
