"""The Hugging Face Space: exactly the files it would hold, within the Hub's limits, and the app started from a
copy of only those files the way a Space starts it."""
from __future__ import annotations

import pytest

import fnmatch
import json
import os
import shutil
import subprocess
import sys

from app_server import free_port, query_photos
from ui.space import LFS_SIZE, MAX_FILE_SIZE, space_files

from mga.config import PROJECT_ROOT



pytestmark = pytest.mark.slow  # real app servers in subprocesses

def lfs_patterns() -> list[str]:
    lines = (PROJECT_ROOT / ".gitattributes").read_text().splitlines()
    return [line.split()[0] for line in lines if "filter=lfs" in line]


def test_the_space_holds_the_app_and_nothing_else():
    files = space_files()
    assert {"app.py", "requirements.txt", "README.md", ".gitattributes", "assets/mga-default/model.safetensors",
            "assets/demo-index/manifest.json"} <= set(files)
    for f in files:
        assert not f.startswith(("tests/", "bench/", "docs/", "runs/", ".ci/", "index_builder/")), f
        size = (PROJECT_ROOT / f).stat().st_size
        assert size <= MAX_FILE_SIZE, f
        if size > LFS_SIZE:  # a git push needs these in LFS
            assert any(fnmatch.fnmatch(os.path.basename(f), p) for p in lfs_patterns()), f
    assert (PROJECT_ROOT / "README.md").read_text().startswith("---\n")  # the Space's front matter
    front = (PROJECT_ROOT / "README.md").read_text().split("---\n")[1]
    assert "app_file: app.py" in front and "sdk: gradio" in front


def test_the_app_starts_from_the_space_files_alone(tmp_path):
    """As a Space runs it: only the listed files, `python app.py`, GRADIO_SERVER_NAME=0.0.0.0, SPACE_ID set."""
    space = tmp_path / "space"
    for f in space_files():
        (space / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(PROJECT_ROOT / f, space / f)
    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", GRADIO_SERVER_NAME="0.0.0.0",
               GRADIO_SERVER_PORT=str(port), SPACE_ID="mga-test/fashion-search", PYTHONUNBUFFERED="1")
    env.pop("MGA_INDEX", None)
    log = open(tmp_path / "space.log", "w+")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=space, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        from gradio_client import Client, handle_file

        client = None
        while client is None:  # until it answers, or it exits
            assert proc.poll() is None, (tmp_path / "space.log").read_text()[-3000:]
            try:
                client = Client(f"http://127.0.0.1:{port}/", verbose=False, download_files=False)
            except Exception:
                subprocess.run([sys.executable, "-c", "import time; time.sleep(1)"])
        out = client.predict(handle_file(str(query_photos(1)[0])), 3, "All", api_name="/search")
        assert len(out["results"]) == 3 and json.dumps(out).count(str(space)) == 0
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
