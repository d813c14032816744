"""The app as a Hugging Face Space: exactly which files it needs, and their upload.

    python -m ui.space --list                 # what a Space of this app holds (tracked files, no dotfiles or links)
    python -m ui.space --upload org/name      # create or update the Space (needs `hf auth login`)

The Space runs `app.py` (README front matter) on the embedded weights and the demo index; nothing else of the
project (tests, benchmarks, docs, training runs), nor anything untracked, goes up: `--upload` sends exactly what
`--list` prints. The Hub stores files over 10 MB with LFS by itself; `.gitattributes` marks the same binaries for
a git push.
"""
from __future__ import annotations

import argparse
import subprocess
from pathlib import Path
from typing import Sequence

from mga import PROJECT_ROOT

SPACE_FILES = ["app.py", "README.md", "requirements.txt", "mga/*.py", "ui/*.py",
               "assets/mga-default/*", "assets/demo-index/*", "assets/demo-gallery/**", "assets/examples/*"]
LFS_SIZE = 10_000_000  # the Hub refuses larger files outside LFS
MAX_FILE_SIZE = 50_000_000  # far below the Hub's limits; a bigger file here would be a mistake


def space_files(root: Path = PROJECT_ROOT) -> list[str]:
    """The files a Space of this app holds: tracked by git, matching SPACE_FILES (filtered by huggingface_hub as
    the Hub filters patterns), regular files only, and no dotfile or file in a dot-folder (a token, an editor's
    state): nothing a working tree happens to hold beside them."""
    from huggingface_hub.utils import filter_repo_objects

    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, text=True, check=True).stdout
    listed = filter_repo_objects([f for f in tracked.split("\0") if f], allow_patterns=SPACE_FILES)
    return sorted(f for f in listed if not any(part.startswith(".") for part in Path(f).parts)
                  and not (root / f).is_symlink() and (root / f).is_file())


def space_operations(root: Path = PROJECT_ROOT) -> list:
    """The Hub commit of a Space: one added file per line of `space_files(root)`, nothing else."""
    from huggingface_hub import CommitOperationAdd

    return [CommitOperationAdd(path_in_repo=f, path_or_fileobj=str(root / f)) for f in space_files(root)]


def upload(repo_id: str, root: Path = PROJECT_ROOT) -> str:
    """Create or update the Space with exactly what --list prints, in one commit."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo_id, repo_type="space", space_sdk="gradio", exist_ok=True)
    api.create_commit(repo_id, repo_type="space", operations=space_operations(root),
                      commit_message="Update the app")
    return f"https://huggingface.co/spaces/{repo_id}"


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m ui.space", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    action = p.add_mutually_exclusive_group(required=True)
    action.add_argument("--list", action="store_true", help="print the files and their total size")
    action.add_argument("--upload", metavar="ORG/NAME", help="create or update this Space")
    args = p.parse_args(argv)
    files = space_files()
    if args.list:
        for f in files:
            print(f)
        print(f"{len(files)} files, {sum((PROJECT_ROOT / f).stat().st_size for f in files) / 1e6:.1f} MB")
        return
    print(upload(args.upload))


if __name__ == "__main__":
    main()
