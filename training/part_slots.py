"""What `--parts-only` trains, and the parts drawn anew for it: a fresh aggregator (`--new-parts`) or some slots
alone (`--new-slots`), everything else of the --init model kept bit for bit."""
from __future__ import annotations

import torch
from torch import nn

from mga.fga import FineGranularAggregator
from mga.model import MGAModel

PART_PARAMETERS = ("fga.", "part_logits")  # what --parts-only trains
SLOT_PARAMETERS = ("fga.queries", "part_logits")  # what --new-slots trains: the aggregator's layers stay


def parts_only(model: MGAModel, new_parts: bool = False, slots: list[int] | None = None,
               resumed: bool = False) -> None:
    """Freeze all but the part aggregator (FGA and the parts' weights); `new_parts`: a fresh aggregator first,
    parts weighed alike; `slots`: only those slots anew and trained (`new_slots`). A resumed run keeps the
    checkpoint's parts."""
    if new_parts and not resumed:
        cfg = model.config
        model.fga = FineGranularAggregator(cfg.embed_dim, cfg.num_parts, cfg.fga_heads, cfg.fga_layers)
        nn.init.zeros_(model.part_logits)
    model.backbone.freeze()
    for name, param in model.named_parameters():
        param.requires_grad_(name in SLOT_PARAMETERS if slots else name.startswith(PART_PARAMETERS))
    if slots:
        new_slots(model, slots, draw=not resumed)


def new_slots(model: MGAModel, slots: list[int], draw: bool = True) -> None:
    """Some part slots anew (`draw`: their FGA queries drawn as FGA draws them) and the only slots that train
    (parts_only freezes the aggregator's shared weights, SLOT_PARAMETERS): the other slots' queries get no
    gradient, so with one FGA layer (the default's: its cross-attention reads each query alone) their maps stay the
    --init model's."""
    queries = model.fga.queries
    if not all(0 <= k < len(queries) for k in slots):
        raise ValueError(f"--new-slots {slots}: the model has parts 0..{len(queries) - 1}")
    trained = torch.zeros(len(queries), 1)
    trained[slots] = 1.0
    if draw:
        with torch.no_grad():
            queries[slots] = torch.randn(len(slots), queries.shape[1])
    queries.register_hook(lambda grad: grad * trained.to(grad.device))
