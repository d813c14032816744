"""The app as a Hugging Face Space: exactly which files it needs, and their upload.

    python -m ui.space --list                 # what a Space of this app holds (tracked files only)
    python -m ui.space --upload org/name      # create or update the Space (needs `hf auth login`)

The Space runs `app.py` (README front matter) on the embedded weights and the demo index; nothing else of the
project (tests, benchmarks, docs, training runs) goes up. The Hub stores files over 10 MB with LFS; `upload`
does that by itself, and `.gitattributes` marks the same binaries for a git push.
"""
from __future__ import annotations

import argparse
import subprocess
from pathlib import Path
from typing import Sequence

from mga.config import PROJECT_ROOT

SPACE_FILES = ["app.py", "README.md", "requirements.txt", ".gitattributes", "mga/*.py", "ui/*.py",
               "assets/mga-default/*", "assets/demo-index/*", "assets/demo-gallery/**", "assets/examples/*"]
LFS_SIZE = 10_000_000  # the Hub refuses larger files outside LFS
MAX_FILE_SIZE = 50_000_000  # far below the Hub's limits; a bigger file here would be a mistake


def space_files(root: Path = PROJECT_ROOT) -> list[str]:
    """The tracked files a Space of this app holds, filtered by huggingface_hub exactly as `upload` filters them."""
    from huggingface_hub.utils import filter_repo_objects

    tracked = subprocess.run(["git", "ls-files"], cwd=root, capture_output=True, text=True, check=True).stdout
    return sorted(filter_repo_objects(tracked.split("\n"), allow_patterns=SPACE_FILES))


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
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(args.upload, repo_type="space", space_sdk="gradio", exist_ok=True)
    api.upload_folder(folder_path=PROJECT_ROOT, repo_id=args.upload, repo_type="space", allow_patterns=SPACE_FILES,
                      commit_message="Update the app")
    print(f"https://huggingface.co/spaces/{args.upload}")


if __name__ == "__main__":
    main()
