"""The one home of MGA's configuration: model shape, retrieval weights, paths of bundled assets."""
from __future__ import annotations

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

# Largest image we agree to decode (pixels). Beyond this PIL would happily allocate gigabytes.
MAX_IMAGE_PIXELS = 60_000_000
# Smallest side we accept: below it there is no garment left to see.
MIN_IMAGE_SIDE = 16
# Zoom views of gallery images (mga.views): a ZOOM_GRID x ZOOM_GRID lattice of square windows, ZOOM_SCALE x the
# garment's size (the size of a shop's close-up), indexed next to the full photo, except windows less than
# ZOOM_MIN_COVER garment; ZOOM_GRID = 0 turns them off. Chosen over 4 trained models (README, "Zoom views").
ZOOM_GRID = 4
ZOOM_SCALE = 0.35
ZOOM_MIN_COVER = 0.5
# Most images (views) per model forward when encoding: evaluation, the app, and index builds, which pack exactly
# this many views per forward across images (index_builder.packing). On the CPU small forwards are faster per
# image (the default model, channels-last, 2 cores: 41-62 img/s in forwards of 4, 37-44 of 8, 27 of 32; README,
# "Measured"); on a GPU large ones fill the chip. Other device types get the CPU's.
FORWARD_BATCH = {"cpu": 4, "cuda": 128}
# DataLoader processes that decode images (index builds, evaluation, training). On the CPU the model already uses
# every core, so 2 (at most the cores) suffice; with a GPU the work is decode-bound and gets every core but the
# one that feeds the GPU (None): an H200 with 16 cores built 121 img/s with 6 workers, 176-185 with 15 (README).
LOADER_WORKERS = {"cpu": 2, "cuda": None}
# In index builds, whether those processes decode while the model encodes (a GPU, which they must keep fed) or
# take turns with it, decoding BURST_IMAGES images while the model waits (the CPU, where decoders beside its
# forwards slow them down ~3x their own CPU time; README "Measured").
OVERLAP_DECODING = {"cpu": False, "cuda": True}
BURST_IMAGES = 16
# torch CPU threads of the process that feeds the model during an index build (None: torch's default, every core).
# With a GPU the decoding workers hold every other core, and 16 OpenMP threads contending with them for the
# feeder's copies slowed it down: bench_build on an H100 with 16 cores, zoom views, built 104 photos/s with 16
# threads and 186-189 with one (README, "On a lent GPU").
FEEDER_THREADS = {"cpu": None, "cuda": 1}


@dataclass
class MGAConfig:
    """Everything needed to rebuild an MGA model; saved as config.json next to model.safetensors."""

    backbone: str = "tf_efficientnet_lite0"
    image_size: int = 224
    embed_dim: int = 128
    num_parts: int = 6
    fga_layers: int = 1
    fga_heads: int = 4
    alpha: float = 0.5  # weight of the global term in coarse and ATA similarities
    tau: float = 0.1  # temperature of ATA's soft part assignment
    gem_p: float = 3.0  # GeM pooling exponent for CNN backbones
    # A head that tells the figure (the garment) from its background on the token grid; its probability weights
    # the global pooling and biases the parts' attention, so that clutter behind a garment moves neither.
    figure_head: bool = False
    # Part names per garment category (mga.parts.names_for), read off where each part sits after training.
    part_names: dict = field(default_factory=dict)
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    extra: dict = field(default_factory=dict)  # free-form provenance (training recipe, data)

    @property
    def embedding_dim(self) -> int:
        return self.embed_dim * (self.num_parts + 1)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "MGAConfig":
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        for key in ("mean", "std"):
            if key in known:
                known[key] = tuple(known[key])
        return cls(**known)
