"""training.distill: the similarity-correlation term on hand-made matrices, and the teacher on real photos."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from PIL import ImageOps

from conftest import LUMA
from training.distill import PhotoTeacher, PretrainedGeM, similarity_correlation_loss
from mga.imageio import load_image
from mga.transforms import working_side


def test_similarity_correlation_is_zero_for_the_teachers_ranking_at_any_scale_and_two_when_reversed():
    x = F.normalize(torch.randn(8, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    teacher = x @ x.T
    assert similarity_correlation_loss(0.3 * teacher + 0.5, teacher).item() == pytest.approx(0, abs=1e-6)
    assert similarity_correlation_loss(-teacher, teacher).item() == pytest.approx(2, abs=1e-6)
    other = F.normalize(torch.randn(8, 16, generator=torch.Generator().manual_seed(1)), dim=1)
    assert 0.3 < similarity_correlation_loss(other @ other.T, teacher).item() < 1.7


@pytest.mark.requires_shared
def test_teacher_measures_how_far_the_default_drifted_on_real_photos(default_model):
    """The teacher is the pretrained backbone: the fine-tuned default has drifted from it (loss > 0), and the
    loss has a gradient for every trainable layer it reaches."""
    photos = sorted(LUMA.glob("img/*/*/*/*.jpg"))[::40][:8]
    teacher = PhotoTeacher(photos, default_model, batch=8, device=torch.device("cpu"))
    assert teacher.features.shape == (8, default_model.backbone.num_features)
    model = type(default_model)(default_model.config)
    model.load_state_dict(default_model.state_dict())
    model.train()
    loss = teacher.loss(model)
    assert 0 < loss.item() < 2
    loss.backward()
    assert model.global_proj.weight.grad.abs().sum() > 0


@pytest.mark.requires_shared
def test_pretrained_descriptor_is_the_teachers_and_tells_products_apart(default_model):
    """The benchmarks' baseline and the distillation teacher are one descriptor: the teacher's features of some
    real photos are the baseline's, and it ranks a flipped copy of each photo first among the others."""
    photos = sorted(LUMA.glob("img/*/*/*/*.jpg"))[::30][:6]
    baseline = PretrainedGeM(default_model)
    teacher = PhotoTeacher(photos, default_model, batch=6, device=torch.device("cpu"))
    images = [load_image(p, max_side=working_side(default_model.transform.size)) for p in photos]
    gallery = baseline.encode(images)
    assert torch.allclose(gallery, teacher.features, atol=1e-4)
    assert torch.allclose(gallery.norm(dim=1), torch.ones(len(photos)), atol=1e-5)
    mirrored = [ImageOps.mirror(im) for im in images]
    assert baseline.ranking(mirrored, gallery, top=1)[:, 0].tolist() == list(range(len(photos)))


@pytest.mark.requires_shared
def test_another_backbone_untrained_is_its_own_descriptor(default_model):
    """`backbone=` swaps in another pretrained backbone at the model's input side: DINOv2's CLS token (384 wide),
    not the default's GeM, and still a descriptor that finds a mirrored photo's original."""
    photos = sorted(LUMA.glob("img/*/*/*/*.jpg"))[::30][:4]
    images = [load_image(p, max_side=working_side(default_model.transform.size)) for p in photos]
    dino = PretrainedGeM(default_model, backbone="vit_small_patch14_dinov2")
    gallery = dino.encode(images)
    assert gallery.shape == (4, 384)
    assert dino.backbone.spec.kind == "vit" and dino.transform.size == default_model.transform.size
    assert torch.allclose(gallery.norm(dim=1), torch.ones(4), atol=1e-5)
    assert dino.ranking([ImageOps.mirror(im) for im in images], gallery, top=1)[:, 0].tolist() == [0, 1, 2, 3]
