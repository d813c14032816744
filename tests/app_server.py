"""The app as a server for the tests: a real `python app.py` on a free port of 127.0.0.1 (HF_HUB_OFFLINE=1),
the index it serves and the photos the tests send it."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mga.config import DEFAULT_INDEX_DIR

ROOT = Path(__file__).resolve().parents[1]

LUMA_IMG = ROOT.parent / "shared" / "data" / "luma-inshop" / "img"


def index_dir() -> Path:
    """The prebuilt demo index, or MGA_TEST_INDEX while it is not there."""
    env = os.environ.get("MGA_TEST_INDEX")
    path = Path(env) if env else DEFAULT_INDEX_DIR
    if not (path / "manifest.json").exists():
        pytest.skip(f"no index at {path}: build assets/demo-index (python -m index_builder) or set MGA_TEST_INDEX")
    return path


def gallery_root() -> Path:
    from mga.index import GalleryIndex

    return GalleryIndex(index_dir()).roots[0]


def query_photos(n: int = 5) -> list[Path]:
    ex = sorted(p for p in (ROOT / "assets" / "examples").glob("*")
                if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))
    photos = ex if len(ex) >= n else sorted(LUMA_IMG.glob("*/*/*/*.jpg"))[::53]
    assert len(photos) >= n, "no query photos found"
    return photos[:n]


class RunningApp(str):
    """The URL of a running test app, with its process id and its temporary folder (Gradio's cache is in there)."""

    def __new__(cls, url: str, pid: int, tmp: Path) -> "RunningApp":
        app = super().__new__(cls, url)
        app.pid, app.tmp = pid, tmp
        return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(tmp: Path, args: list[str] = (), env: dict | None = None, timeout: float = 900.0):
    """Start `python app.py` on a free port, with `tmp` as its temporary folder and the home of its log; returns
    (process, url, log) once it answers."""
    import urllib.request

    port = free_port()
    e = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", MGA_INDEX=str(index_dir()),
             PYTHONUNBUFFERED="1", TMPDIR=str(tmp), **(env or {}))
    log = open(tmp / "app.log", "w+")
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--port", str(port), *args], cwd=ROOT, env=e,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"app exited with {proc.returncode}:\n{log.read()}")
        try:
            with urllib.request.urlopen(url + "gradio_api/info", timeout=2) as r:
                if r.status == 200:
                    return proc, url, log
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("app did not start in time")


def stop_app(proc) -> None:
    """SIGTERM, as a Space is stopped; a kill only if it hangs."""
    proc.terminate()
    try:
        proc.wait(300)
    except subprocess.TimeoutExpired:
        proc.kill()
