"""Where weights come from: a Hub id (`org/name` or `org/name@revision`), a local folder, or the embedded default."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Callable, Iterable

import safetensors.torch
import torch
from huggingface_hub import hf_hub_download
from safetensors import safe_open

from . import closeup, confidence, part_names
from .config import DEFAULT_WEIGHTS_DIR, MGAConfig
from .config_json import config_from_json
from .files import atomic_folder
from .model import MGAModel, skeleton

CONFIG, SAFETENSORS = "config.json", "model.safetensors"  # a checkpoint folder's two files, as the Hub names them
# config.json is read whole before it is checked: the default's is 41 kB (its close-up detector is most of it)
MAX_CONFIG_BYTES = 16 * 2**20
# Numbers (parameters and buffers) an MGA checkpoint may hold, whatever its files say: 8 GB of float32. The default
# holds 7.4e6; the largest backbone in mga.backbones twice (trained and anchor) with 16 FGA layers at embed_dim 1024
# about 0.3e9; embed_dim 4096 with 16 layers of 64 heads (within MGAConfig's ranges) 4.3e9.
MAX_PARAMETERS = 2_000_000_000


class WeightsError(RuntimeError):
    """Weights could not be loaded; the message says from where and why."""


def split_revision(spec: str) -> tuple[str, str | None]:
    """'org/name@rev' -> ('org/name', 'rev'); no '@' -> revision None (the Hub's main)."""
    repo, _, rev = spec.partition("@")
    return repo, rev or None


def load_model(weights: str | Path | None = None, device: str = "cpu") -> MGAModel:
    """Load MGA weights from a local folder, a Hub id, or (None) the embedded default in assets/. The config is
    checked whole (`check_config`) and the tensors it describes against those model.safetensors holds
    (`check_tensors`) before the model is built: a bad checkpoint is a WeightsError here, never a failure later."""
    source = Path(weights) if weights is not None else DEFAULT_WEIGHTS_DIR
    label = weights or source
    try:
        if source.is_dir():
            if not (source / SAFETENSORS).exists():
                raise WeightsError(f"{source}: a folder without {SAFETENSORS} is not an MGA checkpoint")
            if not (source / CONFIG).exists():
                raise WeightsError(f"{source}: a folder without {CONFIG} is not an MGA checkpoint")
            files = {name: source / name for name in (CONFIG, SAFETENSORS)}
            config, shape = check_config(files[CONFIG], label)
        elif weights is not None and "/" in str(weights) and not str(weights).startswith((".", "/")):
            repo, revision = split_revision(str(weights))
            files = {CONFIG: Path(hf_hub_download(repo, CONFIG, revision=revision))}
            config, shape = check_config(files[CONFIG], label)  # before downloading the weights it describes
            files[SAFETENSORS] = Path(hf_hub_download(repo, SAFETENSORS, revision=revision))
        else:
            raise WeightsError(f"{weights}: neither a local checkpoint folder nor a Hub id like org/name[@revision]")
        check_tensors(shape, files[SAFETENSORS], label)
        model = MGAModel(config)
        safetensors.torch.load_model(model, files[SAFETENSORS], strict=True)
    except WeightsError:
        raise
    except RuntimeError as exc:
        if "state_dict" not in str(exc):
            raise WeightsError(f"could not load MGA weights from {label}: {exc}") from exc
        raise WeightsError(f"{label}: {SAFETENSORS} does not fit its {CONFIG}: "
                           f"{_tensor_mismatch(str(exc))}") from None
    except Exception as exc:  # the Hub's own errors (offline, 404, gated) name the problem; keep them
        raise WeightsError(f"could not load MGA weights from {label}: {type(exc).__name__}: {exc}") from exc
    # channels-last: oneDNN runs the default CNN faster on the CPU with the same outputs (the fingerprint and saved
    # weights are those of the usual layout)
    return model.to(device, memory_format=torch.channels_last).eval()


def check_config(path: Path, label: str | Path) -> tuple[MGAConfig, MGAModel]:
    """A checkpoint's config.json checked whole, and the model it describes on the meta device (its shapes, no
    memory): every field the code reads (mga.config_json.config_from_json), the fitted part names, calibration
    and close-up detector against the model's parts and embedding, and its size against MAX_PARAMETERS. Raises
    WeightsError naming the field and what is wrong."""
    size = path.stat().st_size
    if size > MAX_CONFIG_BYTES:
        raise WeightsError(f"{label}: {CONFIG} has {size:,} bytes, more than the {MAX_CONFIG_BYTES:,} a config "
                           "may have")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, or nested past the parser's depth
        raise WeightsError(f"{label}: {CONFIG} is not readable JSON: {type(exc).__name__}: {exc}") from None
    try:
        config = config_from_json(raw)
        shape = skeleton(config)
        numbers = _numbers(tuple(t.shape) for t in shape.state_dict().values())
        if numbers > MAX_PARAMETERS:
            raise ValueError(f"it describes a model of {numbers:,} numbers, more than the {MAX_PARAMETERS:,} an MGA "
                             "checkpoint may hold (embed_dim, fga_layers, fga_heads, num_parts and backbone set its "
                             "size)")
        part_names.check_names(config.part_names, config.num_parts)
        confidence.check_calibration(config.confidence)
        closeup.check_detector(config.closeup, shape.embedding_width)
    except ValueError as exc:
        raise WeightsError(f"{label}: {CONFIG}: {exc}") from None
    return config, shape


def check_tensors(shape: MGAModel, path: Path, label: str | Path) -> None:
    """Refuse a model.safetensors whose tensors (names and shapes, read from its header alone) are not those of
    the model its config describes (`shape`, from check_config): every tensor is loaded from the checkpoint
    (the anchor's pretrained backbone too), so the two must agree exactly, and the model is never built larger
    than the file."""
    try:
        with safe_open(str(path), framework="pt") as f:
            held = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except Exception as exc:  # safetensors' own error type: a truncated, foreign or corrupted file
        raise WeightsError(f"{label}: {SAFETENSORS} is not a readable safetensors file: {exc}") from None
    wanted = {name: tuple(t.shape) for name, t in shape.state_dict().items()}
    if held == wanted:
        return
    missing = sorted(wanted.keys() - held.keys())  # sorted, as torch's own strict-load error lists them
    unexpected = sorted(held.keys() - wanted.keys())
    wrong = sorted(k for k in wanted.keys() & held.keys() if held[k] != wanted[k])
    kinds = (("missing tensors", missing), ("unexpected tensors", unexpected), ("wrong shapes for", wrong))
    found = [f"{kind} {_some(keys)}" for kind, keys in kinds if keys]
    raise WeightsError(f"{label}: {SAFETENSORS} does not fit its {CONFIG} ({CONFIG} describes "
                       f"{_numbers(wanted.values()):,} numbers, {SAFETENSORS} holds {_numbers(held.values()):,}): "
                       f"{'; '.join(found)}")


def _numbers(shapes: Iterable[tuple[int, ...]]) -> int:
    return sum(math.prod(s) for s in shapes)


def _some(keys: list[str], shown: int = 4) -> str:
    more = f" (+{len(keys) - shown} more)" if len(keys) > shown else ""
    return f"{', '.join(keys[:shown])}{more}"


def _tensor_mismatch(message: str, shown: int = 4) -> str:
    """torch's strict-load error (every key, often hundreds, a kind per line) as one line naming a few of each."""
    found = []
    for line in message.splitlines():
        for marker, label in (("Missing key(s)", "missing tensors"), ("Unexpected key(s)", "unexpected tensors"),
                              ("size mismatch for", "wrong shapes for")):
            if marker in line:
                keys = re.findall(r'"([^"]+)"', line) or re.findall(r"size mismatch for ([\w.]+)", line)
                found.append(f"{label} {_some(keys, shown)}")
    return "; ".join(found) or message[:500]


def describe_weights(weights: str | Path | None) -> str:
    return "embedded default (assets/mga-default)" if weights is None else str(weights)


def save_model_atomically(model: MGAModel, path: Path) -> None:
    """Save in the usual memory layout (a loaded model is channels-last), replacing `path` only when complete."""
    model.to(memory_format=torch.contiguous_format)
    with atomic_folder(path) as tmp:
        model.save_pretrained(tmp)


def rewrite_checkpoint(prog: str, weights: str, out: str | Path, change: Callable[[MGAModel], MGAModel]) -> None:
    """Load `weights`, `change` the model and save it in `out` atomically (training.anchor, training.wise). Weights that
    cannot be loaded, or an argument `change` refuses (ValueError), end the program in one line naming them. A
    close-up detector fitted for the old weights is dropped (it reads their embeddings), with how to refit it."""
    try:
        model = change(load_model(weights))
    except (ValueError, WeightsError) as e:
        raise SystemExit(f"{prog}: {e}") from None
    if model.config.closeup and not closeup.fitted_for(model):
        model.config.closeup = {}
        print(f"{prog}: the close-up detector was fitted for the old weights; fit it for these with: "
              f"python -m training.closeup --weights {out}")
    save_model_atomically(model, Path(out))
