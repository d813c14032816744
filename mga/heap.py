"""The process's heap (glibc malloc) set for a long-running server: memory a search frees goes back to the system.

glibc keeps freed blocks in the arena of the thread that freed them, and raises its threshold for memory-mapping
large blocks each time one is freed: a server whose worker threads each once handled a large image keeps that
memory for good. `serve_freed_memory` fixes the threshold (large blocks are always mapped, so always returned) and
`return_freed` hands back what the arenas hold, after a search in the next pause between searches
(`return_freed_soon`). Elsewhere than glibc both do nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading
import time

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (malloc.h)
MMAP_THRESHOLD = 1 << 20  # blocks this large (an image, a batch of tokens) are mapped and unmapped on their own
TRIM_THRESHOLD = 8 << 20  # free memory at the top of a heap beyond this goes back at once


@functools.lru_cache(maxsize=None)
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _ = libc.malloc_trim, libc.mallopt  # glibc has both
        return libc
    except (OSError, AttributeError):  # not glibc
        return None


def serve_freed_memory() -> None:
    """Set the heap for a server, before its worker threads start."""
    libc = _libc()
    if libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)
        libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)


def return_freed() -> None:
    """Hand the memory the threads' arenas hold free back to the system (after a search, a large decode)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


IDLE_SECONDS = 0.5  # a trim waits for a pause this long in the searches (module doc)
_state = threading.Lock()
_asked = {"running": False, "last": 0.0}


def return_freed_soon(idle: float = IDLE_SECONDS) -> None:
    """`return_freed` on a thread of its own once no search has asked for `idle` seconds. malloc_trim walks every
    arena and locks each while it does (a few ms): run beside a search, it held up that search's every allocation;
    in a pause it costs nobody anything. One trimmer at a time; asked while it trims, it trims once more after."""
    with _state:
        _asked["last"] = time.monotonic()
        if _asked["running"]:
            return
        _asked["running"] = True

    def trim() -> None:
        while True:
            while (wait := _asked["last"] + idle - time.monotonic()) > 0:
                time.sleep(wait)
            started = time.monotonic()
            return_freed()
            with _state:
                if _asked["last"] < started:
                    _asked["running"] = False
                    return

    threading.Thread(target=trim, name="malloc-trim", daemon=True).start()
