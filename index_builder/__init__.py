"""Gallery images -> MGA index folder (FAISS + items + part tokens + attention maps).

See `python -m index_builder --help`."""
from .build import BuildError, build_index
from .edit import add_to_index, merge_indexes, remove_from_index
from .gallery import discover_gallery, shard_of

__all__ = ["BuildError", "add_to_index", "build_index", "merge_indexes", "remove_from_index", "discover_gallery",
           "shard_of"]
