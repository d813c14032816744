"""Where weights come from: a Hub id (`org/name` or `org/name@revision`), a local folder, or the embedded default."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Callable

import torch

from . import closeup
from .config import DEFAULT_WEIGHTS_DIR
from .files import atomic_folder
from .model import MGAModel


class WeightsError(RuntimeError):
    """Weights could not be loaded; the message says from where and why."""


def split_revision(spec: str) -> tuple[str, str | None]:
    """'org/name@rev' -> ('org/name', 'rev'); no '@' -> revision None (the Hub's main)."""
    repo, _, rev = spec.partition("@")
    return repo, rev or None


def load_model(weights: str | Path | None = None, device: str = "cpu") -> MGAModel:
    """Load MGA weights from a local folder, a Hub id, or (None) the embedded default in assets/."""
    source = Path(weights) if weights is not None else DEFAULT_WEIGHTS_DIR
    try:
        if source.is_dir():
            if not (source / "model.safetensors").exists():
                raise WeightsError(f"{source}: a folder without model.safetensors is not an MGA checkpoint")
            model = MGAModel.from_pretrained(source, strict=True)
        elif weights is not None and "/" in str(weights) and not str(weights).startswith((".", "/")):
            repo, revision = split_revision(str(weights))
            model = MGAModel.from_pretrained(repo, revision=revision, strict=True)
        else:
            raise WeightsError(f"{weights}: neither a local checkpoint folder nor a Hub id like org/name[@revision]")
    except WeightsError:
        raise
    except RuntimeError as exc:
        if "state_dict" not in str(exc):
            raise WeightsError(f"could not load MGA weights from {weights or source}: {exc}") from exc
        raise WeightsError(f"{weights or source}: model.safetensors does not fit its config.json: "
                           f"{_tensor_mismatch(str(exc))}") from None
    except Exception as exc:  # the Hub's own errors (offline, 404, gated) name the problem; keep them
        raise WeightsError(f"could not load MGA weights from {weights or source}: {type(exc).__name__}: {exc}") from exc
    # channels-last: oneDNN runs the default CNN faster on the CPU with the same outputs (the fingerprint and saved
    # weights are those of the usual layout)
    return model.to(device, memory_format=torch.channels_last).eval()


def _tensor_mismatch(message: str, shown: int = 4) -> str:
    """torch's strict-load error (every key, often hundreds, a kind per line) as one line naming a few of each."""
    parts = []
    for line in message.splitlines():
        for marker, label in (("Missing key(s)", "missing tensors"), ("Unexpected key(s)", "unexpected tensors"),
                              ("size mismatch for", "wrong shapes for")):
            if marker in line:
                keys = re.findall(r'"([^"]+)"', line) or re.findall(r"size mismatch for ([\w.]+)", line)
                more = f" (+{len(keys) - shown} more)" if len(keys) > shown else ""
                parts.append(f"{label} {', '.join(keys[:shown])}{more}")
    return "; ".join(parts) or message[:500]


def describe_weights(weights: str | Path | None) -> str:
    return "embedded default (assets/mga-default)" if weights is None else str(weights)


def save_model_atomically(model: MGAModel, path: Path) -> None:
    """Save in the usual memory layout (a loaded model is channels-last), replacing `path` only when complete."""
    model.to(memory_format=torch.contiguous_format)
    with atomic_folder(path) as tmp:
        model.save_pretrained(tmp)


def rewrite_checkpoint(prog: str, weights: str, out: str | Path, change: Callable[[MGAModel], MGAModel]) -> None:
    """Load `weights`, `change` the model and save it in `out` atomically (mga.anchor, mga.wise). Weights that
    cannot be loaded, or an argument `change` refuses (ValueError), end the program in one line naming them. A
    close-up detector fitted for the old weights is dropped (it reads their embeddings), with how to refit it."""
    try:
        model = change(load_model(weights))
    except (ValueError, WeightsError) as e:
        raise SystemExit(f"{prog}: {e}") from None
    if model.config.closeup and not closeup.fitted_for(model):
        model.config.closeup = {}
        print(f"{prog}: the close-up detector was fitted for the old weights; fit it for these with: "
              f"python -m mga.closeup --weights {out}")
    save_model_atomically(model, Path(out))
