"""MGA fashion visual search, the serving core: a photo in, the shop's products out, each match explained.

    from mga import SearchEngine
    engine = SearchEngine.load("assets/demo-index")          # the embedded default weights
    result = engine.search("photo.jpg", k=10)
    for m in result.matches:
        print(m.rank, m.item_id, m.confidence, m.part_names, m.contributions)

The names below are the core's public face (what the app, `ui/`, imports); training and studies live in the
`training` package, which this one never imports.
"""
from .colour import colour_name
from .confidence import CONFIDENT, likely
from .config import ASSETS_DIR, DEFAULT_INDEX_DIR, MAX_IMAGE_BYTES, MIN_IMAGE_SIDE, PROJECT_ROOT, MGAConfig
from .data import category_key
from .explain import OVERALL, WHOLE, overlay
from .garments import KIND_NAMES, ON_SKIN, Garment
from .heap import return_freed_soon, serve_freed_memory
from .hub import WeightsError, describe_weights, load_model
from .imageio import ImageError, fit_size, load_image, shrink
from .index import GalleryIndex
from .index_files import image_type
from .index_format import GalleryFileError, IndexFormatError, IndexMismatchError
from .matches import Match, SearchResult
from .model import Encoding, MGAModel
from .part_names import garment_kind
from .search import SearchEngine
from .views import FULL_BOX

__all__ = [
    # searching
    "SearchEngine", "SearchResult", "Match", "GalleryIndex", "Encoding",
    # weights
    "load_model", "describe_weights", "MGAModel", "MGAConfig",
    # what can go wrong, in words a user reads
    "ImageError", "WeightsError", "GalleryFileError", "IndexFormatError", "IndexMismatchError",
    # photos
    "load_image", "fit_size", "shrink", "image_type", "FULL_BOX",
    # explanations, confidence, colour, garments
    "WHOLE", "OVERALL", "overlay", "CONFIDENT", "likely", "colour_name", "Garment", "KIND_NAMES", "ON_SKIN",
    "garment_kind", "category_key",
    # paths and limits
    "ASSETS_DIR", "DEFAULT_INDEX_DIR", "PROJECT_ROOT", "MAX_IMAGE_BYTES", "MIN_IMAGE_SIDE",
    # memory of a long-running server
    "return_freed_soon", "serve_freed_memory",
]
