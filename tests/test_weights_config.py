"""A checkpoint's config.json is checked whole when it is loaded (mga.hub.load_model), and the size of the model it
describes against its model.safetensors, before anything is built; the search CLI ends a failed load in one line."""
from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from mga.config import DEFAULT_INDEX_DIR, DEFAULT_WEIGHTS_DIR
from mga.hub import MAX_PARAMETERS, WeightsError, load_model
from mga.index import GalleryIndex
from mga.index_format import IndexMismatchError
from mga.search import SearchEngine

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = json.loads((DEFAULT_WEIGHTS_DIR / "config.json").read_text())
CLOSEUP, CONFIDENCE, NAMES = DEFAULT["closeup"], DEFAULT["confidence"], DEFAULT["part_names"]


def checkpoint(folder: Path, config: dict | str | None = None, **changes) -> Path:
    """A checkpoint folder: the embedded default's model.safetensors (linked, not copied) beside a config.json
    that is the default's with `changes`, or `config` as it is (a string is written verbatim)."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        os.symlink(DEFAULT_WEIGHTS_DIR / "model.safetensors", folder / "model.safetensors")
    except OSError:  # no symlinks here: a copy does as well
        (folder / "model.safetensors").write_bytes((DEFAULT_WEIGHTS_DIR / "model.safetensors").read_bytes())
    text = config if isinstance(config, str) else json.dumps({**DEFAULT, **changes} if config is None else config)
    (folder / "config.json").write_text(text)
    return folder


BAD = {  # id: (changes to the default's config, what the error must say)
    "closeup weights too few": (dict(closeup={**CLOSEUP, "weights": CLOSEUP["weights"][:10]}),
                                r"MGAConfig\.closeup\.weights has 10 numbers; it must have 2176"),
    "closeup weight not a number": (dict(closeup={**CLOSEUP, "weights": [*CLOSEUP["weights"][:-1], "0.1"]}),
                                    r"MGAConfig\.closeup\.weights\[2175\]"),
    "closeup weight NaN": (dict(closeup={**CLOSEUP, "weights": [float("nan"), *CLOSEUP["weights"][1:]]}),
                           r"MGAConfig\.closeup\.weights\[0\] = nan"),
    "closeup without bias": (dict(closeup={k: v for k, v in CLOSEUP.items() if k != "bias"}),
                             r"MGAConfig\.closeup\.bias"),
    "closeup fingerprint a number": (dict(closeup={**CLOSEUP, "fingerprint": 5}), r"MGAConfig\.closeup\.fingerprint"),
    "closeup a list": (dict(closeup=CLOSEUP["weights"]), r"MGAConfig\.closeup = \[.*must be a JSON object"),
    # a valid model without the anchor: the stored detector reads an anchored model's wider embedding
    "closeup for another width": (dict(anchor=0.0), r"MGAConfig\.closeup\.weights has 2176 numbers; it must have 896"),
    "confidence weights three": (dict(confidence={**CONFIDENCE, "weights": [1.0, 2.0, 3.0]}),
                                 r"MGAConfig\.confidence\.weights has 3 numbers; it must have 2"),
    "confidence weights a number": (dict(confidence={**CONFIDENCE, "weights": 2.0}), r"MGAConfig\.confidence\.weights"),
    "confidence bias infinite": (dict(confidence={**CONFIDENCE, "bias": float("inf")}), r"MGAConfig\.confidence\.bias"),
    "confidence other features": (dict(confidence={**CONFIDENCE, "features": ["score", "rank"]}),
                                  r"MGAConfig\.confidence\.features"),
    "confidence a string": (dict(confidence="calibrated"), r"MGAConfig\.confidence = 'calibrated'"),
    "part names row too short": (dict(part_names={**NAMES, "tees": NAMES["tees"][:5]}),
                                 r"MGAConfig\.part_names\['tees'\] has 5 names; it must list 6"),
    "part names for other num_parts": (dict(num_parts=5), r"MGAConfig\.part_names\['\*bottom'\] has 6 names"),
    "part name not a string": (dict(part_names={**NAMES, "tees": [*NAMES["tees"][:2], 3, *NAMES["tees"][3:]]}),
                               r"MGAConfig\.part_names\['tees'\]\[2\]"),
    "part name empty": (dict(part_names={**NAMES, "tees": ["", *NAMES["tees"][1:]]}),
                        r"MGAConfig\.part_names\['tees'\]\[0\]"),
    "part name too long": (dict(part_names={**NAMES, "tees": ["x" * 500, *NAMES["tees"][1:]]}),
                           r"MGAConfig\.part_names\['tees'\]\[0\]"),
    "part names a list": (dict(part_names=[["hem"] * 6]), r"MGAConfig\.part_names = .*must be a JSON object"),
    "unknown backbone": (dict(backbone="resnet9000"), r"MGAConfig\.backbone = 'resnet9000'"),
    "figure head a string": (dict(figure_head="yes"), r"MGAConfig\.figure_head"),
    "mean a number": (dict(mean=0.5), r"MGAConfig\.mean"),
    "std two numbers": (dict(std=[0.2, 0.2]), r"MGAConfig\.std"),
    "alpha too big for a float": (dict(alpha=10**400), r"MGAConfig\.alpha"),
    "gem_p a bool": (dict(gem_p=True), r"MGAConfig\.gem_p"),
    "tau out of range": (dict(tau=100.0), r"MGAConfig\.tau"),
    "anchor_pool a list": (dict(anchor_pool=["whole"]), r"MGAConfig\.anchor_pool"),
    "fga_heads not dividing embed_dim": (dict(fga_heads=3), r"MGAConfig\.embed_dim = 128 must be divisible"),
    "extra a list": (dict(extra=[1, 2]), r"MGAConfig\.extra"),
    # valid on its own, but the checkpoint's tensors are not the ones it describes
    "embed_dim other than the weights'": (dict(embed_dim=64, closeup={}),
                                          r"model\.safetensors does not fit its config\.json \(config\.json describes "
                                          r"7,058,921 numbers, model\.safetensors holds 7,421,481\): wrong shapes for "
                                          r"fga\.layers\.0\.cross\.in_proj_bias, .* \(\+25 more\)"),
    "figure head the weights lack": (dict(figure_head=False, anchor_pool="whole"),
                                     r"unexpected tensors figure_head\.bias, figure_head\.weight"),
}


@pytest.mark.parametrize("changes, says", list(BAD.values()), ids=list(BAD))
def test_a_bad_config_field_is_refused_at_load_naming_it(tmp_path, changes, says):
    with pytest.raises(WeightsError, match=says) as refused:
        load_model(checkpoint(tmp_path / "w", **changes))
    assert "\n" not in str(refused.value)  # one line: the app shows it as the reason for its fallback


@pytest.mark.parametrize("text, says", [
    ("[1, 2]", "holds a JSON list, not an object"),
    ('{"alpha": 0.5,', "config.json is not readable JSON"),
    ("[" * 100_000 + "]" * 100_000, "config.json is not readable JSON"),
], ids=["a list", "cut short", "nested too deep"])
def test_a_config_that_is_no_object_is_refused(tmp_path, text, says):
    with pytest.raises(WeightsError, match=says):
        load_model(checkpoint(tmp_path / "w", text))


def test_a_folder_without_config_is_refused(tmp_path):
    folder = checkpoint(tmp_path / "w")
    (folder / "config.json").unlink()
    with pytest.raises(WeightsError, match="without config.json"):
        load_model(folder)


def test_a_huge_config_is_refused_before_anything_is_allocated(tmp_path):
    """embed_dim 4096, 16 layers of 64 heads pass MGAConfig's ranges and would allocate about 17 GB."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux
    with pytest.raises(WeightsError, match=rf"4,313,\d{{3}},\d{{3}} numbers, more than the {MAX_PARAMETERS:,}"):
        load_model(checkpoint(tmp_path / "w", embed_dim=4096, fga_layers=16, fga_heads=64))
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown < 1_000_000, f"max RSS grew by {grown} kB"


def test_a_config_larger_than_its_weights_is_refused_before_it_is_built(tmp_path):
    """Below the cap, but more numbers than model.safetensors holds: refused from the file's header alone."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(WeightsError, match=r"describes 415,006,121 numbers, model\.safetensors holds 7,421,481"):
        load_model(checkpoint(tmp_path / "w", embed_dim=2048, fga_layers=6, fga_heads=8, closeup={}))
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 1_000_000


def test_the_embedded_default_and_a_copy_of_it_load():
    model = load_model(None)
    assert model.fingerprint() == DEFAULT["closeup"]["fingerprint"]  # its detector was fitted for these weights
    assert model.embedding_width == len(DEFAULT["closeup"]["weights"])


def test_a_valid_config_with_nothing_fitted_loads(tmp_path, default_model):
    model = load_model(checkpoint(tmp_path / "w", part_names={}, confidence={}, closeup={}))
    assert model.fingerprint() == default_model.fingerprint()  # fitted fields are not the model's identity


def test_a_valid_config_that_differs_from_the_index_is_still_a_mismatch(tmp_path):
    """Another alpha is a valid model with another fingerprint: it loads, and the index refuses it as before."""
    model = load_model(checkpoint(tmp_path / "w", alpha=0.4, closeup={}))
    with pytest.raises(IndexMismatchError, match="fingerprint"):
        SearchEngine(model, GalleryIndex(DEFAULT_INDEX_DIR), tmp_path / "w")


def _search_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """python -m mga.search offline, with an empty Hugging Face cache of its own."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "HF_HUB_CACHE": str(tmp_path / "hf" / "hub")}
    photo = next((ROOT / "assets" / "examples").glob("*.jpg"))
    return subprocess.run([sys.executable, "-m", "mga.search", "--image", str(photo), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args, says", [
    (["--weights", "no-such-org/no-such-model"], "could not load MGA weights from no-such-org/no-such-model"),
    (["--weights", "{bad}"], "MGAConfig.confidence.weights has 3 numbers"),
    (["--index", "{empty}"], "no manifest.json; not an MGA index folder"),
], ids=["hub id offline", "bad checkpoint", "not an index"])
def test_the_search_cli_ends_a_failed_load_in_one_line(tmp_path, args, says):
    bad = checkpoint(tmp_path / "bad", confidence={**CONFIDENCE, "weights": [1.0, 2.0, 3.0]})
    (tmp_path / "empty").mkdir()
    args = [a.format(bad=bad, empty=tmp_path / "empty") for a in args]
    done = _search_cli(tmp_path, *args)
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""
    lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and says in lines[0], done.stderr
