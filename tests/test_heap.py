"""mga.heap.return_freed_soon: a search never waits for the trim nor runs beside it, and what the last search freed
is trimmed even when it asked while a trim was running."""
from __future__ import annotations

import threading
import time

from mga import heap


def test_a_trim_asked_for_while_one_runs_runs_once_more_after(monkeypatch):
    started, release, done = threading.Event(), threading.Event(), []

    def slow_trim() -> None:  # the first trim holds until told; the ones after it return at once
        started.set()
        if not done:
            release.wait(60)
        done.append(threading.current_thread().name)

    monkeypatch.setattr(heap, "return_freed", slow_trim)
    heap.return_freed_soon(idle=0)
    assert started.wait(60)
    for _ in range(5):  # asked five times while the first runs: not one thread each, one more trim in all
        heap.return_freed_soon(idle=0)
    assert done == [] and threading.active_count() < 20
    release.set()
    for t in [t for t in threading.enumerate() if t.name == "malloc-trim"]:
        t.join()
    assert not heap._asked["running"]
    assert done == ["malloc-trim", "malloc-trim"]  # the first trim, then one for all that asked while it ran


def test_the_trim_waits_for_a_pause_in_the_searches(monkeypatch):
    """Asked again and again, it trims once, and not before `idle` has passed since the last ask (a lower bound
    only: a busy machine may trim later, never sooner)."""
    trims, done = [], threading.Event()
    monkeypatch.setattr(heap, "return_freed", lambda: (trims.append(time.monotonic()), done.set()))
    for _ in range(4):
        last = time.monotonic()  # before the ask: the ask's own time is no earlier
        heap.return_freed_soon(idle=0.3)
        time.sleep(0.05)
    assert done.wait(60)
    for t in [t for t in threading.enumerate() if t.name == "malloc-trim"]:
        t.join()
    assert len(trims) == 1 and trims[0] >= last + 0.3
