"""The Hugging Face Space: exactly the files it would hold, within the Hub's limits, and the app started from a
copy of only those files the way a Space starts it."""
from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys

import pytest

from app_server import free_port, query_photos
from mga.config import PROJECT_ROOT
from ui.space import LFS_SIZE, MAX_FILE_SIZE, space_files, space_operations

def lfs_patterns() -> list[str]:
    lines = (PROJECT_ROOT / ".gitattributes").read_text().splitlines()
    return [line.split()[0] for line in lines if "filter=lfs" in line]


def test_the_space_holds_the_app_and_nothing_else():
    files = space_files()
    assert {"app.py", "requirements.txt", "README.md", "assets/mga-default/model.safetensors",
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


def test_the_upload_sends_exactly_the_listed_files_never_what_else_the_tree_holds(tmp_path):
    """A working tree with a token, an optimizer state and a private folder beside the weights (untracked), and a
    tracked link and dotfile among them: the commit the upload makes holds the --list files and nothing else."""
    root = tmp_path / "tree"
    (root / "assets" / "mga-default" / "private").mkdir(parents=True)
    (root / "app.py").write_text("print('app')\n")
    weights = root / "assets" / "mga-default"
    (weights / "config.json").write_text("{}")
    (weights / ".secret.json").write_text("{}")  # tracked, but a dotfile
    (weights / "outside.bin").symlink_to(PROJECT_ROOT / "pyproject.toml")  # tracked, but a link out of the tree
    git = lambda *a: subprocess.run(["git", *a], cwd=root, check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    git("add", "app.py", "assets")
    (weights / ".hf_token").write_text("hf_secret")
    (weights / "optimizer.pt").write_bytes(b"state")
    (weights / "private" / "notes.txt").write_text("private")
    listed = space_files(root)
    assert listed == ["app.py", "assets/mga-default/config.json"]
    operations = space_operations(root)
    assert [op.path_in_repo for op in operations] == listed
    assert all(os.path.realpath(op.path_or_fileobj).startswith(str(root)) for op in operations)


@pytest.mark.slow  # a real app server in a subprocess
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
