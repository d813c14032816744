"""Atomic writes, of files and of whole folders (a checkpoint, an index): a reader (or a crash) never sees a
half-written one, and the previous version stays until the new one is complete."""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path` (same suffix, so writers that infer the format from it still work);
    once the block finishes without error, rename it onto `path` in one step; on error, remove it."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def temp_folders(out: Path) -> list[Path]:
    """Unfinished `<out>.tmp-<pid>` folders beside `out`, oldest first."""
    return sorted(out.parent.glob(f"{out.name}.tmp-*"), key=lambda p: p.stat().st_mtime)


def owner_alive(folder: Path) -> bool:
    """Whether the process that named a `*.tmp-<pid>` folder is still running (its build may go on)."""
    try:
        os.kill(int(folder.name.rsplit("-", 1)[1]), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def recover_folder(out: Path) -> None:
    """A crash between the two renames of `swap_in` leaves only `<out>.old-<pid>`: put it back."""
    if not out.exists():
        olds = sorted(out.parent.glob(f"{out.name}.old-*"), key=lambda p: p.stat().st_mtime)
        if olds:
            os.rename(olds[-1], out)


def swap_in(tmp: Path, out: Path) -> None:
    """Replace folder `out` by the finished `tmp` with two renames; the old one is deleted only afterwards."""
    old = None
    if out.exists():
        old = out.with_name(f"{out.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.rename(out, old)
    os.rename(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder path beside `path` to write into; once the block finishes without error, swap
    it in for `path`; on error, remove it and leave `path` as it was."""
    path = Path(path)
    recover_folder(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        yield tmp
        swap_in(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
