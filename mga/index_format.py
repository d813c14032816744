"""The index folder's format: one home for its file names, what each holds and the limits a reader puts on them,
and the errors a reader raises (reading and checking them: mga.index_manifest, mga.index_arrays, mga.index)."""
from __future__ import annotations

MANIFEST = "manifest.json"
ITEMS = "items.jsonl"
FAISS_FILE = "index.faiss"  # HNSW or IVF-PQ; a flat (exact) index is rebuilt from the tokens at load
EMBEDDINGS = "embeddings.npy"  # formats 1-2 only: float32 (N, E) coarse embeddings (format 3 rebuilds them)
GLOBAL = "global.npy"  # (N, G) float16, or format 3's coded form: uint8 (N, bytes) codes (CODECS) of its groups
PARTS = "parts.npy"  # (N, K, D) float16, or format 3's coded form: uint8 (N, K, bytes) codes of each part token
ATTN = "attn.npy"  # formats 1-2: float16 (N, K, h, w) part attention maps (format 3 keeps none: see EvenMaps)
GLOBAL_SCALE = "global_scale.npy"  # float16 (N, S): the coded global tokens' scales, one per row and group
PARTS_SCALE = "parts_scale.npy"  # float16 (N, K): the coded part tokens' scales, one per row and part
OWNER = "owner.npy"  # whole numbers (N,): the image (line of items.jsonl) of each row; rows of one image adjacent
BOXES = "boxes.npy"  # float32 (N, 4): where each row's view lies in its image, (x0, y0, x1, y1) as fractions
SKIPPED = "skipped.txt"
# 2: rows are views (mga.views: full photo + zoom windows), owner.npy and boxes.npy. 3: what search needs once:
# no coarse embeddings (rebuilt from the tokens, mga.model.coarse_embedding), tokens float16 or coded (int8 /
# 4-bit with a float16 scale per vector), no attention maps
FORMAT_VERSION = 3
INDEX_TYPES = ("flat", "hnsw", "ivfpq")
# how format 3 stores the tokens (index_builder --tokens): exactly as format 2 did, or coded (CODECS)
TOKEN_DTYPES = ("float16", "int8", "int4")
DEFAULT_TOKENS = "int4"  # a new index's (float16: format 2's scores exactly, for indexes whose scores are recorded)
# bits per number of each code: int8 and int4 are signed (c * scale, |c| <= 127 or 7), sqrt4 is for groups that
# are never negative (the pretrained anchor's GeM: its values are (c * scale)^2, c in 0..15, finer near 0)
CODECS = {"int8": 8, "int4": 4, "sqrt4": 4}
SCALES = {GLOBAL: GLOBAL_SCALE, PARTS: PARTS_SCALE}
ARRAY_DIMS = {EMBEDDINGS: 2, GLOBAL: 2, PARTS: 3, ATTN: 4, OWNER: 1, BOXES: 2, GLOBAL_SCALE: 2, PARTS_SCALE: 2}
# what each array may hold: float16/32/64 vectors and boxes, uint8 token codes, whole numbers for owner.npy
# (native byte order only: torch reads the memory maps as they are)
ARRAY_KINDS = {EMBEDDINGS: "f", GLOBAL: "fu", PARTS: "fu", ATTN: "f", OWNER: "iu", BOXES: "f", GLOBAL_SCALE: "f",
               PARTS_SCALE: "f"}
CODE_SIZES = {GLOBAL: 1, PARTS: 1}  # token codes are bytes
FLOAT_SIZES = (2, 4, 8)
FINITE_CHECK_ROWS = 65_536  # rows checked for NaN / inf per step (bounded memory on any index size)
# The manifest is read whole at start-up: a few kB, plus its skip report (about 200 bytes per file that could not
# be indexed); 64 MB holds the report of 300k skipped files and still stops a damaged or crafted one (a link to a
# huge file) from filling the memory.
MANIFEST_MAX_BYTES = 64 * 2**20
# items.jsonl is read whole as well: about 300 bytes per image as built, more with long CSV metadata. Its cap
# grows with the index (views, from the arrays' headers, whose sizes are checked against their files; every
# image has at least one view), so that no honest index reaches it.
ITEMS_BASE_BYTES = 64 * 2**20
ITEMS_BYTES_PER_VIEW = 64 * 2**10


class IndexMismatchError(RuntimeError):
    """The index was built with other weights than the model searching it: its vectors mean nothing here."""


class IndexFormatError(RuntimeError):
    """The folder is not an MGA index, or a damaged one: the message names the file and what is wrong."""


class GalleryFileError(LookupError):
    """A gallery image (or its thumbnail) that cannot be served: missing, outside its folder, not a regular file,
    not an image. The message names the image by its number and gallery path, never by a path of the server."""


def items_max_bytes(views: int) -> int:
    """The most an index of `views` views may hold in items.jsonl (the builder checks what it writes against it)."""
    return ITEMS_BASE_BYTES + ITEMS_BYTES_PER_VIEW * views
