"""The one home of MGA's configuration: model shape, retrieval weights, paths of bundled assets."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
ASSETS_DIR = PROJECT_ROOT / "assets"
DEFAULT_WEIGHTS_DIR = ASSETS_DIR / "mga-default"
DEFAULT_INDEX_DIR = ASSETS_DIR / "demo-index"
CACHE_DIR = Path.home() / ".cache" / "mga"
# The team's shared data beside the project. Distractor photos: validation/ may feed training (backgrounds),
# test/ is for measuring only.
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
TRAIN_BACKGROUNDS = SHARED_DATA / "distractors" / "validation"
TEST_DISTRACTORS = SHARED_DATA / "distractors" / "test"
# The phone photos each side of a study uses: the training side may choose settings, the test side only measures.
SIDE_DISTRACTORS = {"test": TEST_DISTRACTORS, "validation": TRAIN_BACKGROUNDS}

# Largest image we agree to decode (pixels). Beyond this PIL would happily allocate gigabytes.
MAX_IMAGE_PIXELS = 60_000_000
# Largest image file we read (bytes): checked before reading, so a huge or sparse file costs nothing.
MAX_IMAGE_BYTES = 100_000_000
# Memory that the large images being decoded at once may take (bytes, estimated from each file's header before
# decoding): a large decode beyond it waits for others to finish, so simultaneous searches cannot stack them.
DECODE_MEMORY = 600_000_000
# Smallest side we accept: below it there is no garment left to see.
MIN_IMAGE_SIDE = 16
# Side that benchmark and fitting photos are thumbnailed to, about what a phone app sends, whatever the camera.
PHOTO_SIDE = 640
# Candidates (images) that ATA re-ranks after the coarse search: evaluation, the engine and the app alike.
DEFAULT_RERANK_TOP = 100
# Results of the query's kind of garment first (mga.category_vote): the CATEGORY_VOTE_TOP best re-ranked images
# vote on a category (a softmax of their ATA scores at CATEGORY_VOTE_TEMPERATURE) and each re-ranked image gains
# CATEGORY_VOTE x the share of its category; 0 turns it off (`--category-vote 0` on the CLIs and benches). Chosen
# on the validation side, adopted over three draws of the corruptions (docs/experiments.md).
CATEGORY_VOTE = 0.1
CATEGORY_VOTE_TOP = 20
CATEGORY_VOTE_TEMPERATURE = 0.05
# Zoom views of gallery images (mga.views): a ZOOM_GRID x ZOOM_GRID lattice of square windows, ZOOM_SCALE x the
# garment's size (the size of a shop's close-up), indexed next to the full photo, except windows less than
# ZOOM_MIN_COVER garment; ZOOM_GRID = 0 turns them off. How they were chosen: docs/experiments.md.
ZOOM_GRID = 4
ZOOM_SCALE = 0.35
ZOOM_MIN_COVER = 0.5
# Gallery views a query is searched among (mga.closeup.VIEWS): every view (all); "auto" searches the windows for
# close-ups only, by a detector fitted after training. "auto" missed its pre-declared rule (docs/experiments.md).
DEFAULT_VIEWS = "all"
# Most images (views) per model forward when encoding (evaluation, the app, index builds, which pack exactly this
# many views per forward): small forwards are fastest per image on the CPU, large ones fill a GPU
# (docs/benchmarks.md). Other device types get the CPU's.
FORWARD_BATCH = {"cpu": 4, "cuda": 128}
# DataLoader processes that decode images: on the CPU the model already uses every core, so 2 suffice; with a GPU
# the work is decode-bound and gets every core but the one that feeds the GPU (None).
LOADER_WORKERS = {"cpu": 2, "cuda": None}
# In index builds, whether those processes decode while the model encodes (a GPU, which they must keep fed) or
# take turns with it, decoding BURST_IMAGES images while the model waits (the CPU, where decoders beside its
# forwards slow both down).
OVERLAP_DECODING = {"cpu": False, "cuda": True}
BURST_IMAGES = 16
# torch CPU threads of the process that feeds the model during an index build (None: torch's default, every core):
# with a GPU the decoding workers hold every other core, and OpenMP threads contending with them slow the feeder.
FEEDER_THREADS = {"cpu": None, "cuda": 1}


ANCHOR_POOLS = ("whole", "figure")


@dataclass
class MGAConfig:
    """Everything needed to rebuild an MGA model; saved as config.json next to model.safetensors."""

    backbone: str = "tf_efficientnet_lite0"
    image_size: int = 288  # beat 224 and 320 in the recipe sweep (docs/experiments.md)
    embed_dim: int = 128
    num_parts: int = 6
    fga_layers: int = 1
    fga_heads: int = 4
    alpha: float = 0.5  # weight of the global term in coarse and ATA similarities
    tau: float = 0.1  # temperature of ATA's soft part assignment
    gem_p: float = 3.0  # GeM pooling exponent for CNN backbones
    # Share of every similarity (coarse and ATA) that goes to the frozen pretrained backbone's GeM descriptor,
    # carried in the global token beside the trained one (training.anchor): what the backbone knew about photos in
    # the wild, which fine-tuning on a few hundred studio photos forgets.
    anchor: float = 0.0
    # What the anchor's GeM pools: the "whole" photo, or the "figure", weighted by the figure head's probability
    # like the trained global token, so that a stranger's room behind a garment is not part of its descriptor.
    anchor_pool: str = "whole"
    # A head that tells the figure (the garment) from its background on the token grid; its probability weights
    # the global pooling and biases the parts' attention, so that clutter behind a garment moves neither.
    figure_head: bool = False
    # Part names per garment category (mga.part_names.names_for), read off where each part sits after training.
    part_names: dict = field(default_factory=dict)
    # How a result's score maps to the probability that it is the query's product (mga.confidence); fitted after
    # training, like the part names, and like them not part of the model's fingerprint.
    confidence: dict = field(default_factory=dict)
    # Which queries are close-ups of a detail, searched among the gallery's zoom windows too (mga.closeup); fitted
    # after training for the fingerprint it names.
    closeup: dict = field(default_factory=dict)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    extra: dict = field(default_factory=dict)  # free-form provenance (training recipe, data)

    def __post_init__(self):
        """Refuse values no model can run with (a hand-edited or corrupted config.json), naming the field."""
        ints = {"image_size": (32, 2048), "embed_dim": (8, 4096), "num_parts": (1, 64), "fga_layers": (0, 16),
                "fga_heads": (1, 64)}
        for name, (low, high) in ints.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ValueError(f"MGAConfig.{name} = {value!r}: must be a whole number from {low} to {high}")
        if self.embed_dim % self.fga_heads:
            raise ValueError(f"MGAConfig.embed_dim = {self.embed_dim} must be divisible by "
                             f"fga_heads = {self.fga_heads}")
        floats = {"alpha": (0.0, 1.0), "tau": (1e-3, 10.0), "gem_p": (1.0, 10.0), "anchor": (0.0, 1.0)}
        for name, (low, high) in floats.items():
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or not low <= value <= high:
                raise ValueError(f"MGAConfig.{name} = {value!r}: must be a finite number from {low} to {high}")
        if self.anchor_pool not in ANCHOR_POOLS:
            raise ValueError(f"MGAConfig.anchor_pool = {self.anchor_pool!r}: must be one of {ANCHOR_POOLS}")
        if self.anchor_pool == "figure" and not self.figure_head:
            raise ValueError("MGAConfig.anchor_pool = 'figure' needs a figure head (figure_head = True): it pools "
                             "the figure head's probability")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if len(value) != 3 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in value) \
                    or name == "std" and min(value) <= 0:
                raise ValueError(f"MGAConfig.{name} = {value!r}: must be 3 finite numbers (std > 0)")

    @property
    def embedding_dim(self) -> int:
        """The coarse embedding's size without an anchor (which adds the backbone's width)."""
        return self.embed_dim * (self.num_parts + 1)

    @property
    def global_weight(self) -> float:
        """The global token's weight in every similarity: alpha, plus the anchor's share that it carries."""
        return self.alpha * (1 - self.anchor) + self.anchor

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    def save(self, folder: str | Path) -> None:
        """Rewrite a checkpoint's config.json in one rename (what is fitted after training: part names,
        confidence), leaving its weights as they are."""
        import json

        from .files import atomic_path

        with atomic_path(Path(folder) / "config.json") as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_dict(cls, d: dict) -> "MGAConfig":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        for key in ("mean", "std"):
            if key in known:
                known[key] = tuple(known[key])
        return cls(**known)
