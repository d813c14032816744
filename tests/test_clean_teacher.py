"""training.robust: the clean-teacher term is zero when the fine-tuned model reads a photo as the teacher does and
grows with what the spoiling changes; BatchNorm keeps the starting model's statistics."""
from __future__ import annotations

import random

import pytest
import torch

from conftest import LUMA
from mga.config import MGAConfig
from mga.imageio import load_image
from mga.model import MGAModel
from training.robust import CleanTeacher, keep_batch_statistics, robust_loss
from training.augment import ConsumerPhotoAugment


@pytest.mark.requires_shared
def test_clean_teacher_term_is_zero_on_clean_twins_and_positive_on_spoilt_photos():
    torch.manual_seed(0)
    random.seed(0)
    model = MGAModel(MGAConfig(image_size=64)).eval()
    photos = [load_image(p, max_side=128) for p in sorted(LUMA.glob("img/MEN/*/*/*front.jpg"))[:4]]
    augment = ConsumerPhotoAugment(64, model.config.mean, model.config.std, shopper=1.0, twin="framed")
    samples = [augment(p) for p in photos]
    spoilt, clean = torch.stack([s.image for s in samples]), torch.stack([s.clean for s in samples])
    teacher = CleanTeacher(MGAModel(MGAConfig(image_size=64)))
    teacher.model.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert teacher.loss(model, model(clean), clean) < 1e-5
        assert 0.01 < teacher.loss(model, model(spoilt), clean) < 3
        enc = model(clean)
        assert robust_loss(enc, enc) < 1e-5
        spoilt_enc = model(spoilt)
        maps = robust_loss(spoilt_enc, enc) - robust_loss(spoilt_enc, enc, maps=False)
        assert 0.01 < maps <= 1  # half the L1 distance of maps that each sum to 1
        whole = CleanTeacher(teacher.model, twin="whole")  # a partial view against the whole garment: no maps
        assert torch.isclose(whole.loss(model, spoilt_enc, clean), teacher.loss(model, spoilt_enc, clean) - maps)


def test_kept_batch_statistics_do_not_move_in_training_mode():
    """A fine-tuning step on spoilt photos leaves BatchNorm's running statistics the starting model's, while
    dropout and the rest stay in training mode."""
    model = MGAModel(MGAConfig(image_size=64)).train()
    keep_batch_statistics(model)
    before = {k: v.clone() for k, v in model.state_dict().items() if "running_" in k}
    assert before and model.training
    model(torch.randn(4, 3, 64, 64))
    after = model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in before.items())
