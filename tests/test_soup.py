"""training.soup: the uniform mean of fine-tuned checkpoints of one shape, on the embedded default's real weights."""
from __future__ import annotations

import pytest
import torch

from conftest import LUMA_TINY
from training.anchor import with_anchor
from mga.config import DEFAULT_WEIGHTS_DIR
from mga.hub import load_model
from mga.imageio import load_image
from training.soup import main, soup
from training.wise import interpolate_backbone


def test_a_soup_of_a_model_and_its_pretrained_backbone_is_the_halfway_wise_model(default_model):
    # the same heads on the pretrained backbone: their mean must be WiSE-FT's halfway point, heads untouched
    pretrained = interpolate_backbone(load_model(None), 0.0)
    halfway = interpolate_backbone(load_model(None), 0.5)
    souped = soup(load_model(None), [pretrained])
    for name, t in souped.state_dict().items():
        assert torch.allclose(t, halfway.state_dict()[name], atol=1e-6), name
    assert torch.equal(souped.fga.queries, default_model.fga.queries)
    assert souped.fingerprint() not in (default_model.fingerprint(), pretrained.fingerprint())
    assert len(souped.config.extra["soup_of"]) == 2


def test_kept_parameters_stay_the_first_checkpoints_and_the_rest_are_averaged(default_model):
    pretrained = interpolate_backbone(load_model(None), 0.0)
    halfway = interpolate_backbone(load_model(None), 0.5).state_dict()
    souped = soup(load_model(None), [pretrained], keep=("backbone.",)).state_dict()
    kept = [n for n in souped if n.startswith("backbone.")]
    assert kept and all(torch.equal(souped[n], default_model.state_dict()[n]) for n in kept)
    assert any(not torch.allclose(souped[n], halfway[n]) for n in kept)  # averaging them would have moved them
    assert all(torch.allclose(t, halfway[n], atol=1e-6) for n, t in souped.items() if n not in kept)


def test_a_soup_of_a_model_with_itself_is_the_model(default_model, luma_photos):
    same = soup(load_model(None), [load_model(None)])
    assert same.fingerprint() == default_model.fingerprint()
    image = [load_image(luma_photos[0])]
    assert torch.equal(same.encode_images(image).embedding, default_model.encode_images(image).embedding)


def test_checkpoints_of_other_shapes_are_refused_by_name(default_model, tmp_path):
    with pytest.raises(ValueError, match="different shapes"):
        soup(load_model(None), [with_anchor(default_model, 0.0)])
    with pytest.raises(SystemExit):
        main(["--weights", str(DEFAULT_WEIGHTS_DIR), "--out", str(tmp_path / "one")])
    with pytest.raises(SystemExit, match="neither a local checkpoint folder"):
        main(["--weights", str(DEFAULT_WEIGHTS_DIR), str(tmp_path / "nowhere"), "--out", str(tmp_path / "bad")])
    assert not (tmp_path / "one").exists() and not (tmp_path / "bad").exists()


def test_the_command_line_writes_a_loadable_soup_with_parts_named_again(default_model, tmp_path, capsys):
    wise = tmp_path / "w0"
    pretrained = interpolate_backbone(load_model(None), 0.0)
    pretrained.save_pretrained(wise)
    main(["--weights", str(DEFAULT_WEIGHTS_DIR), str(wise), "--out", str(tmp_path / "s"), "--data", str(LUMA_TINY)])
    out = capsys.readouterr().out
    souped = load_model(tmp_path / "s")
    assert "the mean of 2 checkpoints" in out and "*top" in out
    assert souped.config.closeup == {}  # fitted for the old weights' embeddings
    assert set(souped.config.part_names) >= {"*top", "*bottom"}
    assert all(len(row) == souped.config.num_parts for row in souped.config.part_names.values())
