"""Index builds on a local Ray with 2 workers: the index equals the single-process build's, bad files are reported
the same way, and a worker killed mid-build is restarted with its chunk retried."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT
from galleries import assert_same_encodings, copy_some, make_bad_gallery
from index_builder import build_index
from mga.index import GalleryIndex
from mga.views import ZoomViews

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install -r requirements-scale.txt")

pytestmark = pytest.mark.slow
QUIET = dict(progress=False, log=lambda msg: None)
SETTINGS = dict(chunk_size=3, zoom=ZoomViews(grid=2))  # several chunks per worker, zoom views included


@pytest.fixture(scope="module")
def gallery(tmp_path_factory, default_model):
    """A gallery of good photos with bad files mixed in, and its single-process index."""
    root = tmp_path_factory.mktemp("ray")
    gal = root / "gallery"
    gal.mkdir()
    make_bad_gallery(gal)
    copy_some(gal, 8, start=1, step=7)
    local = root / "local"
    build_index(gal, local, model=default_model, workers=0, **SETTINGS, **QUIET)
    return gal, local


def assert_same_index(a: GalleryIndex, b: GalleryIndex) -> None:
    assert [it["path"] for it in a.items] == [it["path"] for it in b.items]
    assert [(it["width"], it["height"], it["category"]) for it in a.items] == \
        [(it["width"], it["height"], it["category"]) for it in b.items]
    assert a.manifest["skipped"] == b.manifest["skipped"]
    assert a.fingerprint == b.fingerprint
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.owner, b.owner)
    assert_same_encodings(a, b)


def test_a_ray_build_from_the_cli_equals_the_single_process_build(gallery, tmp_path):
    gal, local = gallery
    out = tmp_path / "ray"
    cmd = [sys.executable, "-m", "index_builder", "--gallery", str(gal), "--out", str(out), "--ray",
           "--ray-workers", "2", "--chunk-size", "3", "--zoom-grid", "2", "--quiet"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = GalleryIndex(local), GalleryIndex(out)
    assert_same_index(a, b)
    assert len(a.manifest["skipped"]) == 11 and "skipped bad/empty.jpg" in done.stderr  # reported as locally
    build = b.manifest["build"]
    assert (build["runner"], build["ray_workers"], build["images_encoded_now"]) == ("ray", 2, len(b.items) + 6)
    assert not list(tmp_path.glob("ray.tmp-*"))


def encoding_workers() -> list[int]:
    """Processes of this machine that are Ray workers running ChunkEncoder.encode."""
    pids = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and (d / "cmdline").read_bytes().startswith(b"ray::ChunkEncoder.encode"):
                pids.append(int(d.name))
        except OSError:  # ended meanwhile
            continue
    return pids


def test_a_worker_killed_mid_build_is_retried_and_the_index_is_complete(gallery, tmp_path, default_model):
    from index_builder.distributed import RayRunner

    gal, local = gallery
    killed = []

    def kill_a_busy_worker(done: int, total: int) -> None:
        """SIGKILL a worker process while it encodes (Ray titles it `ray::ChunkEncoder.encode` then)."""
        busy = [pid for pid in encoding_workers() if not killed]
        if busy:
            os.kill(busy[0], signal.SIGKILL)
            killed.append(busy[0])

    man = build_index(gal, tmp_path / "ray", model=default_model, runner=RayRunner(workers=2),
                      on_chunk=kill_a_busy_worker, **SETTINGS, **QUIET)
    assert len(killed) == 1, "no worker was caught encoding: the gallery is too small for this test"
    with pytest.raises(ProcessLookupError):
        os.kill(killed[0], 0)
    assert_same_index(GalleryIndex(local), GalleryIndex(tmp_path / "ray"))
    assert man["counts"]["images"] == GalleryIndex(local).manifest["counts"]["images"]
    assert not ray.is_initialized()  # the local Ray it started is stopped
