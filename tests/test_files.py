"""mga.files: atomic writes of files and folders, and the recovery of a swap cut between its two renames."""
from __future__ import annotations

import os

import pytest

from mga.files import atomic_folder, atomic_path, recover_folder, swap_in


def test_a_failed_file_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "a.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["a.json"]


def test_a_folder_is_replaced_whole_or_not_at_all(tmp_path):
    out = tmp_path / "model"
    with atomic_folder(out) as tmp:
        tmp.mkdir()
        (tmp / "weights").write_text("v1")
    with pytest.raises(RuntimeError):
        with atomic_folder(out) as tmp:
            tmp.mkdir()
            (tmp / "weights").write_text("v2, half")
            raise RuntimeError("crash")
    assert (out / "weights").read_text() == "v1" and sorted(os.listdir(tmp_path)) == ["model"]
    with atomic_folder(out) as tmp:
        tmp.mkdir()
        (tmp / "weights").write_text("v2")
    assert (out / "weights").read_text() == "v2" and sorted(os.listdir(tmp_path)) == ["model"]


def test_a_swap_cut_between_its_renames_is_recovered(tmp_path):
    """swap_in renames the old folder away, then the new one in: a crash between leaves only `<out>.old-<pid>`."""
    out, new = tmp_path / "index", tmp_path / "index.tmp-1"
    out.mkdir()
    (out / "manifest.json").write_text("old")
    os.rename(out, tmp_path / "index.old-99")  # the first rename happened, the second did not
    recover_folder(out)
    assert (out / "manifest.json").read_text() == "old"
    new.mkdir()
    (new / "manifest.json").write_text("new")
    swap_in(new, out)
    assert (out / "manifest.json").read_text() == "new" and sorted(os.listdir(tmp_path)) == ["index"]
