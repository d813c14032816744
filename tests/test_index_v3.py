"""Index format 3: the tokens stored once (no coarse embeddings: rebuilt from the tokens; no attention maps: the
heatmap's view is encoded again), coded in 4 or 8 bits with a scale per vector or kept in float16; format 2 still
opens and converts (`python -m index_builder convert`); every new array is checked before it is read."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT
from index_builder.edit import convert_index
from index_builder.writer import Piece, encode, token_groups_for, write_index
from mga.config import ASSETS_DIR
from mga.index import GalleryIndex
from mga.index_format import CODECS, GLOBAL, GLOBAL_SCALE, MANIFEST, PARTS, PARTS_SCALE, IndexFormatError
from mga.stored_rows import CodedRows, decode
from bench.scaling import as_format_2
from test_index_format import edit_manifest, resave

DEMO_INDEX = ASSETS_DIR / "demo-index"
STEP = {"int8": 127, "int4": 7, "sqrt4": 15}


@pytest.mark.parametrize("codec", list(CODECS))
def test_codes_hold_each_number_to_half_a_step_and_read_back_the_same(codec):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 4, 64)).astype(np.float32)
    if codec == "sqrt4":
        x = np.abs(x) ** 3  # never negative, most values small: a GeM's shape
    x[0, 0] = 0  # an all-zero vector: scale 0, codes 0
    codes, scales = encode(x, [(codec, 64)])
    assert codes.dtype == np.uint8 and codes.shape == (50, 4, 64 * CODECS[codec] // 8)
    assert scales.dtype == np.float16 and scales.shape == (50, 4, 1)
    y = decode(torch.from_numpy(codes), torch.from_numpy(scales), [(codec, 64)]).numpy()
    assert (y[0, 0] == 0).all()
    with np.errstate(invalid="ignore"):  # 0 / 0 for the zero vector
        if codec == "sqrt4":
            err = np.abs(np.sqrt(y) - np.sqrt(x)).max(-1) / (np.sqrt(x).max(-1) / STEP[codec])
        else:
            err = np.abs(y - x).max(-1) / (np.abs(x).max(-1) / STEP[codec])
    assert np.nanmax(err) <= 0.5 + 1e-3  # half a step of the vector's own scale (rounded up to float16)
    again, again_scales = encode(y, [(codec, 64)])  # an edit writes what it read: the same codes
    np.testing.assert_array_equal(again, codes)
    np.testing.assert_array_equal(again_scales, scales)


def test_groups_of_a_global_token_have_their_own_scales():
    g = np.concatenate([np.full((3, 4), -0.5, np.float32), np.full((3, 8), 0.01, np.float32)], 1)
    groups = [("int4", 4), ("sqrt4", 8)]
    codes, scales = encode(g, groups)
    assert codes.shape == (3, 2 + 4) and scales.shape == (3, 2)
    np.testing.assert_allclose(decode(torch.from_numpy(codes), torch.from_numpy(scales), groups).numpy(), g,
                               rtol=1e-3)
    # the anchor (after the trained token) is coded by its square root only where it is never negative
    assert token_groups_for("int4", 12, 4, 8, True) == {"global": [("int4", 4), ("sqrt4", 8)], "parts": [("int4", 8)]}
    assert token_groups_for("int4", 12, 4, 8, False)["global"] == [("int4", 4), ("int4", 8)]
    assert token_groups_for("int8", 12, None, 8, True) == {"global": [("int8", 12)], "parts": [("int8", 8)]}
    assert token_groups_for("float16", 12, 4, 8, True) is None


def synthetic(out: Path, anchor_sign: float, tokens: str = "int4") -> GalleryIndex:
    """An index of 40 images (2 views each) of a model with a trained token of 8 and an anchor of 16 columns."""
    rng = np.random.default_rng(1)
    n = 80
    g = np.concatenate([rng.standard_normal((n, 8)), anchor_sign * np.abs(rng.standard_normal((n, 16)))], 1)
    parts = rng.standard_normal((n, 3, 8))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    parts /= np.linalg.norm(parts, axis=2, keepdims=True)
    arrays = {"global": g.astype(np.float16), "parts": parts.astype(np.float16), "attn": np.ones((n, 3, 2, 2))}
    items = [{"path": f"v{i}.jpg", "root": 0, "item_id": f"v{i}", "category": "", "width": 1, "height": 1,
              "thumb": None, "meta": {}} for i in range(n // 2)]
    manifest = {"model": {"config": {"embed_dim": 8, "num_parts": 3, "alpha": 0.5, "anchor": 0.5}},
                "source": {"gallery": "synthetic"}, "roots": [{"relative": "."}], "skipped": []}
    out.mkdir()
    write_index(out, out, [Piece(arrays, np.arange(n), np.full(n // 2, 2))], items, manifest, "flat",
                progress=False, tokens=tokens)
    return GalleryIndex(out)


def test_the_writer_codes_a_negative_anchor_without_its_square_root(tmp_path):
    plus, minus = synthetic(tmp_path / "plus", 1.0), synthetic(tmp_path / "minus", -1.0)
    assert plus.manifest["tokens"]["global"] == [["int4", 8], ["sqrt4", 16]]
    assert minus.manifest["tokens"]["global"] == [["int4", 8], ["int4", 16]]
    for ix in (plus, minus):
        assert ix.manifest["coarse"]["global_weight"] == 0.75 and ix.manifest["maps"]["shape"] == [3, 2, 2]
        g = np.asarray(ix.global_)
        assert g.shape == (80, 24) and ((g[:, 8:] >= 0).all() if ix is plus else (g[:, 8:] <= 0).all())
        emb = np.asarray(ix.embeddings)  # rebuilt: [sqrt(W) g ; sqrt((1 - W) / K) parts], unit norm
        np.testing.assert_allclose(emb[:, :24], g * np.sqrt(0.75), rtol=1e-6)
        np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=0.05)
        np.testing.assert_allclose(np.asarray(ix.attn).sum((-2, -1)), 1)  # even maps: format 3 stores none
        images, scores, rows = ix.coarse_search(emb[6], 3)  # flat: rebuilt at load, scores exact
        assert images[0] == 3 and rows[0] == 6 and scores[0] == pytest.approx(float(emb[6] @ emb[6]), abs=1e-5)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The demo index as format 2 (as it shipped before), and converted back to format 3 in each form."""
    root = tmp_path_factory.mktemp("v3")
    (root / "demo-gallery").symlink_to((ASSETS_DIR / "demo-gallery").resolve())
    import shutil

    shutil.copytree(DEMO_INDEX, root / "v2")
    as_format_2(root / "v2")
    for tokens in ("float16", "int8", "int4"):
        convert_index(root / "v2", root / tokens, tokens=tokens, progress=False, log=lambda msg: None)
    return root


def test_format_2_converts_to_each_form_and_float16_keeps_its_tokens(converted):
    old = GalleryIndex(converted / "v2")
    assert old.format_version == 2
    for tokens, (low, high) in {"float16": (40e3, 60e3), "int8": (20e3, 30e3), "int4": (10e3, 16e3)}.items():
        ix = GalleryIndex(converted / tokens)
        man = ix.manifest
        assert ix.format_version == 3 and man["tokens"]["dtype"] == tokens and man["created_by"].endswith("convert")
        assert man["build"]["converted_from"]["format_version"] == 2 and man["source"] == old.manifest["source"]
        assert not (converted / tokens / "embeddings.npy").exists() and not (converted / tokens / "attn.npy").exists()
        assert ix.items == old.items and (ix.owner == old.owner).all() and (ix.boxes == old.boxes).all()
        size = sum(f.stat().st_size for f in (converted / tokens).iterdir())
        assert low < size / len(ix) < high, (tokens, size / len(ix))  # bytes per photo (format 2: 165 kB)
        g, p = (np.asarray(a) for a in (ix.global_, ix.parts))
        tolerance = {"float16": 0, "int8": 3e-3, "int4": 0.05}[tokens]
        np.testing.assert_allclose(g, np.asarray(old.global_, np.float32), atol=tolerance)
        np.testing.assert_allclose(p, np.asarray(old.parts, np.float32), atol=tolerance)
        np.testing.assert_allclose(np.asarray(ix.embeddings), np.asarray(old.embeddings), atol=max(tolerance, 1e-3))


def test_each_form_searches_as_format_2_did(converted, default_model):
    from mga.search import SearchEngine

    old = SearchEngine(default_model, GalleryIndex(converted / "v2"))
    photos = [ASSETS_DIR / "demo-gallery" / old.index.relative_path(i) for i in (3, 60, 150)]
    want = [old.search(p, k=5, explain=False) for p in photos]
    for tokens, tolerance in {"float16": 1e-5, "int8": 2e-3, "int4": 2e-2}.items():
        engine = SearchEngine(default_model, GalleryIndex(converted / tokens))
        for photo, before in zip(photos, want):
            res = engine.search(photo, k=5, explain=False)
            assert res.matches[0].index == before.matches[0].index  # a gallery photo finds itself first
            assert [m.score for m in res.matches] == pytest.approx([m.score for m in before.matches], abs=tolerance)
            if tokens == "float16":  # the very tokens format 2 stored: the same results
                assert [m.index for m in res.matches] == [m.index for m in before.matches]


def test_a_heatmap_of_a_format_3_index_uses_the_maps_of_the_view_it_encodes_again(converted, default_model):
    from mga.explain import WHOLE
    from mga.search import SearchEngine

    engine = SearchEngine(default_model, GalleryIndex(converted / "int4"))
    res = engine.search(ASSETS_DIR / "demo-gallery" / engine.index.relative_path(20), k=2)
    m = res.matches[0]
    maps = engine.match_maps(res, m)  # the match's side: one forward of the view that matched
    total = maps.term(WHOLE).sum()
    assert total == pytest.approx(m.score, abs=2e-3)  # its cells sum to the score (tokens in 4 bits)
    assert engine.match_heatmap(res, m) is not None


def test_convert_and_info_from_the_command_line(converted, tmp_path):
    import shutil

    import os

    env = dict(os.environ, HF_HUB_OFFLINE="1")
    shutil.copytree(converted / "v2", tmp_path / "ix")
    (tmp_path / "demo-gallery").symlink_to((ASSETS_DIR / "demo-gallery").resolve())
    run = [sys.executable, "-m", "index_builder"]
    done = subprocess.run(run + ["convert", "--index", str(tmp_path / "ix"), "--quiet"], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    ix = GalleryIndex(tmp_path / "ix")  # converted in place, to the default form
    assert ix.format_version == 3 and ix.manifest["tokens"]["dtype"] == "int4" and len(ix) == 183
    assert not list(tmp_path.glob("ix.tmp-*")) and not list(tmp_path.glob("ix.old-*"))
    info = subprocess.run(run + ["info", "--index", str(tmp_path / "ix")], cwd=ROOT, capture_output=True, text=True,
                          env=env, timeout=600)
    disk = json.loads(info.stdout)["disk"]
    assert disk["bytes"] == sum(f.stat().st_size for f in (tmp_path / "ix").iterdir())
    assert disk["per_photo"] == pytest.approx(disk["bytes"] / 183, abs=0.1) and disk["per_photo"] < 16_000
    assert disk["files"]["global.npy"]["per_view"] == pytest.approx(704, abs=1)  # 1408 numbers in 4 bits
    assert "kB per photo" in info.stderr and "format 3" in info.stderr


def coded_copy(converted, tmp_path) -> Path:
    import shutil

    shutil.copytree(converted / "int4", tmp_path / "ix")
    (tmp_path / "demo-gallery").symlink_to((ASSETS_DIR / "demo-gallery").resolve())
    GalleryIndex(tmp_path / "ix")  # intact, it opens
    return tmp_path / "ix"


def negative_scale(path: Path) -> None:
    resave(path, lambda a: np.where(np.arange(len(a))[:, None] == 5, -a, a))


CODED_CORRUPTIONS = {
    "missing scales": (lambda ix: (ix / GLOBAL_SCALE).unlink(), GLOBAL, f"without {GLOBAL_SCALE}"),
    "scales of another shape": (lambda ix: resave(ix / PARTS_SCALE, lambda a: a[:, :-1]), PARTS_SCALE,
                                "where the codes of parts.npy need"),
    "NaN scale": (lambda ix: resave(ix / GLOBAL_SCALE, lambda a: np.where(np.arange(len(a))[:, None] == 7, np.nan,
                                                                          a).astype(a.dtype)),
                  GLOBAL_SCALE, "row 7 is not finite"),
    "negative scale": (lambda ix: negative_scale(ix / PARTS_SCALE), PARTS_SCALE, "row 5 is not finite (NaN or inf) "
                       "or negative"),
    "codes shorter than the groups": (lambda ix: resave(ix / GLOBAL, lambda a: a[:, :-2]), GLOBAL, "702 bytes"),
    "codes of signed bytes": (lambda ix: resave(ix / PARTS, lambda a: a.view(np.int8)), PARTS,
                              "floats or uint8 codes"),
    "an unknown codec": (lambda ix: edit_manifest(ix, lambda m: m["tokens"].update({"global": [["int3", 1408]]})),
                         MANIFEST, "tokens.global must list"),
    "groups that are not the file's": (lambda ix: edit_manifest(
        ix, lambda m: m["tokens"].update({"global": [["int8", 1408]]})), GLOBAL, "codes it as [['int8', 1408]]"),
    "codes without groups": (lambda ix: edit_manifest(ix, lambda m: m["tokens"].pop("parts")), PARTS,
                             "no groups in manifest.json"),
    "floats with scales": (lambda ix: np.save(ix / GLOBAL, np.zeros((2142, 1408), np.float16)), GLOBAL,
                           f"floats, with {GLOBAL_SCALE}"),
    "maps of another shape": (lambda ix: edit_manifest(ix, lambda m: m["maps"].update(shape=[6, 9])), MANIFEST,
                              "maps.shape"),
}


@pytest.mark.parametrize("name", list(CODED_CORRUPTIONS))
def test_a_damaged_coded_index_names_the_file_and_the_fault(converted, tmp_path, name):
    corrupt, file, fault = CODED_CORRUPTIONS[name]
    ix = coded_copy(converted, tmp_path)
    corrupt(ix)
    with pytest.raises(IndexFormatError) as err:
        GalleryIndex(ix)
    assert file in str(err.value) and fault in str(err.value), str(err.value)


def test_rows_read_like_arrays(converted):
    ix = GalleryIndex(converted / "int4")
    assert isinstance(ix.global_, CodedRows) and ix.global_.shape == (2142, 1408) and len(ix.parts) == 2142
    rows = np.array([5, 1, 2000])
    g, p = ix.tokens(rows)
    assert g.dtype == torch.float32 and g.shape == (3, 1408) and p.shape == (3, 6, 128)
    np.testing.assert_array_equal(ix.global_[rows], g.numpy())
    np.testing.assert_array_equal(ix.global_[1], g[1].numpy())
    np.testing.assert_array_equal(ix.parts[4:6, 2], np.asarray(ix.parts)[4:6, 2])
    np.testing.assert_array_equal(ix.embeddings[-1], np.asarray(ix.embeddings)[2141])
    with pytest.raises(IndexError):
        ix.global_[2142]
