"""index_builder on real data and real FAISS: layouts, bad files, exactness, interruption, add/remove, shards."""
from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import LUMA_TINY, ROOT
from galleries import TINY_JPEGS, assert_same_encodings, copy_some, make_bad_gallery
from index_builder import add_to_index, build_index, merge_indexes, remove_from_index
from index_builder import BuildError
from index_builder.decode import EncodeDataset, decoded_batches
from index_builder.gallery import discover_gallery, shard_of
from index_builder.packing import PackedEncoder
from mga.index import GalleryIndex
from mga.search import SearchEngine
from mga.stored_rows import CoarseRows, CodedRows
from mga.views import ZoomViews

QUIET = dict(progress=False, log=lambda msg: None)
# one zoom window per image where the test is not about zoom views: the same code path at a fifth of the cost
FAST = dict(QUIET, zoom=ZoomViews(grid=1))
@pytest.mark.slow
def test_plain_folder_with_bad_files(tmp_path, default_model):
    gal = tmp_path / "gallery"
    gal.mkdir()
    expect = make_bad_gallery(gal)
    (gal / "meta.csv").write_text("path,item_id,category,price\nodd/rgba.png,sku-1,Tees,9.99\n")
    out = tmp_path / "index"
    man = build_index(gal, out, model=default_model, csv=gal / "meta.csv", workers=1, chunk_size=4,
                      batch_size=4, **QUIET)
    ix = GalleryIndex(out)
    indexed = {it["path"] for it in ix.items}
    skipped = {s["path"]: s["error"] for s in man["skipped"]}
    for rel, what in expect.items():
        assert (rel in skipped) == (what == "skip"), (rel, skipped.get(rel))
        assert (rel in indexed) == (what == "ok"), rel
    assert len(indexed) == 6 + 4
    assert "empty" in skipped["bad/empty.jpg"] and "pixels" in skipped["bad/bomb.png"]
    assert "outside the gallery" in skipped["bad/link-out.jpg"] and "loop" in skipped["bad/loop-a.jpg"]
    assert "broken link" in skipped["bad/dangling.jpg"] and "folder" in skipped["bad/folder.jpg"]
    report = (out / "skipped.txt").read_text()
    assert len(report.splitlines()) == 11 and all("\t" in line for line in report.splitlines())
    assert str(tmp_path) not in report + (out / "items.jsonl").read_text()  # reports name gallery paths only
    by_path = {it["path"]: it for it in ix.items}
    assert (by_path["odd/exif_rotated.jpg"]["width"], by_path["odd/exif_rotated.jpg"]["height"]) == (400, 300)
    assert by_path["odd/rgba.png"]["item_id"] == "sku-1" and by_path["odd/rgba.png"]["meta"] == {"price": "9.99"}
    assert by_path["odd/cmyk.jpg"]["category"] == "odd"  # no CSV row: parent folder
    assert man["model"]["fingerprint"] == default_model.fingerprint()
    assert default_model.config.closeup and "closeup" not in man["model"]["config"]
    assert 0 < man["build"]["decode_wait_seconds"] < man["build"]["encode_seconds"]
    # format 3, the default: 4-bit tokens (the anchor by its square root), no coarse embeddings or maps stored
    cfg = default_model.config
    assert ix.format_version == 3 and man["tokens"]["dtype"] == "int4" and isinstance(ix.global_, CodedRows)
    assert man["tokens"]["global"] == [["int4", cfg.embed_dim], ["sqrt4", ix.global_.shape[1] - cfg.embed_dim]]
    assert ix.parts.shape[1:] == (cfg.num_parts, cfg.embed_dim) and ix.parts.codes.shape[1:] == (cfg.num_parts, 64)
    assert isinstance(ix.embeddings, CoarseRows) and ix.embeddings.shape[1] == default_model.embedding_width
    assert not (out / "embeddings.npy").exists() and not (out / "attn.npy").exists()
    assert not list(tmp_path.glob("index.tmp-*")) and not list(tmp_path.glob("index.old-*"))


@pytest.mark.parametrize("burst_images", [1, 5])
def test_decoding_in_turns_yields_what_the_overlapping_loader_yields(tmp_path, default_model, burst_images):
    """A CPU build decodes in turns with encoding (a process pool), a GPU build beside it (a DataLoader): the
    same records, batch by batch and in order, bad files included, whatever the bursts' size."""
    gal = tmp_path / "gallery"
    gal.mkdir()
    make_bad_gallery(gal)
    paths = [e.path for e in discover_gallery(gal).entries]
    ds = EncodeDataset(gal, paths, default_model.transform.pixels, default_model.config.image_size, None, 0,
                       zoom=FAST["zoom"])
    cuts = np.cumsum([0, 3, 1, 4, 2])
    batches = [list(range(a, b)) for a, b in zip(cuts, cuts[1:])] + [list(range(cuts[-1], len(paths)))]
    beside = list(decoded_batches(ds, batches, 2, overlap=True))
    turns = list(decoded_batches(ds, batches, 2, overlap=False, burst_images=burst_images))
    assert [[r["i"] for r in b] for b in turns] == batches == [[r["i"] for r in b] for b in beside]
    for t, b in zip(sum(turns, []), sum(beside, [])):
        assert (t["error"], t["boxes"], t["w"], t["h"]) == (b["error"], b["boxes"], b["w"], b["h"])
        assert (t["x"] is None and b["x"] is None) or torch.equal(t["x"], b["x"])
    assert sum(r["error"] != "" for r in sum(turns, [])) == 6


@pytest.mark.slow
def test_packed_forwards_hold_batch_size_views_across_images(tmp_path, default_model):
    """The encoder of a build carries views over to the next batch, so every forward but the last holds exactly
    batch_size views; each record comes back in order with the encodings of its own views, failed files too."""
    gal = tmp_path / "gallery"
    gal.mkdir()
    make_bad_gallery(gal)
    paths = [e.path for e in discover_gallery(gal).entries]
    ds = EncodeDataset(gal, paths, default_model.transform.pixels, default_model.config.image_size, None, 0,
                       zoom=ZoomViews())
    records = [ds[i] for i in range(len(ds))]
    alone = {r["i"]: default_model.encode(r["x"]) for r in records if r["x"] is not None}
    views = sum(len(r["x"]) for r in records if r["x"] is not None)
    sizes = []
    hook = default_model.register_forward_pre_hook(lambda module, args: sizes.append(len(args[0])))
    try:
        packer = PackedEncoder(default_model, batch_size=3)
        out = []
        for a, b in [(0, 2), (2, 3), (3, 7), (7, len(records))]:
            out += packer.add(dict(r) for r in records[a:b])
        out += packer.flush()
    finally:
        hook.remove()
    assert views % 3 and sizes == [3] * (views // 3) + [views % 3]
    assert [r["i"] for r in out] == list(range(len(records)))
    for r in out:
        assert "x" not in r
        if r["error"]:
            assert "enc" not in r
            continue
        g, parts, attn = r["enc"]  # float16, as chunks keep them (the index rebuilds the coarse embedding)
        assert g.shape[0] == len(r["boxes"]) == len(alone[r["i"]])
        np.testing.assert_allclose(g, alone[r["i"]].global_.numpy(), atol=2e-3)
        np.testing.assert_allclose(parts, alone[r["i"]].parts.numpy(), atol=2e-3)
        np.testing.assert_allclose(attn, alone[r["i"]].attn.numpy(), atol=2e-3)


@pytest.mark.slow
def test_inshop_layout_index_holds_the_models_encodings(tmp_path, default_model):
    """An In-shop data set's gallery split, indexed: its images in the partition's order with their item ids, two
    views each, the coarse embeddings (rebuilt from float16 tokens) those the model gives the full photos."""
    from mga.data import load_retrieval_data
    from training.evaluate import encode_records

    out = tmp_path / "tiny-index"
    build_index(LUMA_TINY, out, model=default_model, workers=0, tokens="float16", **FAST)
    data = load_retrieval_data(LUMA_TINY)
    engine = SearchEngine.load(out, model=default_model)
    ix = engine.index
    assert [it["path"] for it in ix.items] == [r.path for r in data.gallery]
    assert ix.index_type == "flat" and engine.info["images"] == len(data.gallery) == 183
    assert [it["item_id"] for it in ix.items] == [r.item_id for r in data.gallery]
    assert ix.views == 2 * len(data.gallery) and np.all(np.bincount(ix.owner) == 2)
    full = encode_records(default_model, LUMA_TINY, data.gallery)  # the full photos are each image's first view
    np.testing.assert_allclose(ix.embeddings[ix.first_row[:-1]], full.embedding.numpy(), atol=1e-3)


@pytest.mark.slow
def test_interrupted_build_keeps_old_index_and_resumes(tmp_path, default_model):
    gal = tmp_path / "g"
    gal.mkdir()
    copy_some(gal, 10)
    out = tmp_path / "ix"
    build_index(gal, out, model=default_model, workers=0, chunk_size=5, **FAST)
    assert len(GalleryIndex(out)) == 10
    copy_some(gal, 14, start=3)

    class Interrupt(Exception):
        pass

    def stop_after_first(done, total):
        if done == 1:
            raise Interrupt

    with pytest.raises(Interrupt):
        build_index(gal, out, model=default_model, workers=0, chunk_size=5, on_chunk=stop_after_first, **FAST)
    assert len(GalleryIndex(out)) == 10  # the previous index is intact
    leftovers = list(tmp_path.glob("ix.tmp-*"))
    assert len(leftovers) == 1 and len(list((leftovers[0] / "chunks").glob("*.npz"))) == 1
    calls = []
    man = build_index(gal, out, model=default_model, workers=0, chunk_size=5, resume=True,
                      on_chunk=lambda d, t: calls.append((d, t)), **FAST)
    assert man["build"]["resumed"] and calls and calls[0][0] == 2  # chunk 1 was not encoded again
    assert man["build"]["images_encoded_now"] == 24 - 5
    ix = GalleryIndex(out)
    assert len(ix) == 24 and not list(tmp_path.glob("ix.tmp-*"))
    fresh = tmp_path / "fresh"
    build_index(gal, fresh, model=default_model, workers=0, **FAST)
    assert_same_encodings(GalleryIndex(fresh), ix)


@pytest.mark.slow
def test_add_remove_and_search_consistency(tmp_path, default_model):
    gal = tmp_path / "g"
    gal.mkdir()
    first = copy_some(gal, 8)
    out = tmp_path / "ix"
    build_index(gal, out, model=default_model, workers=0, **FAST)
    more = copy_some(gal, 8, start=2)
    add_to_index(out, gal, model=default_model, workers=0, **QUIET)
    ix = GalleryIndex(out)
    assert sorted(it["path"] for it in ix.items) == sorted(set(first) | set(more))
    _, n = remove_from_index(out, paths=[first[0]], item_ids=[ix.items[-1]["item_id"]], progress=False)
    ix2 = GalleryIndex(out)
    gone_item = ix.items[-1]["item_id"]
    assert n >= 2 and len(ix2) == len(ix) - n
    assert first[0] not in {it["path"] for it in ix2.items} and gone_item not in {it["item_id"] for it in ix2.items}
    # rows still line up: the stored embedding of each kept image is the one it had before
    before = {it["path"]: ix.embeddings[ix.view_rows([r])] for r, it in enumerate(ix.items)}
    for r, it in enumerate(ix2.items):
        rows = ix2.view_rows([r])
        assert (ix2.owner[rows] == r).all() and ix2.boxes[rows[0]].tolist() == [0, 0, 1, 1]
        np.testing.assert_array_equal(ix2.embeddings[rows], before[it["path"]])
        _, hit = ix2.faiss.search(ix2.embeddings[rows].astype(np.float32), 1)
        assert (ix2.owner[hit[:, 0]] == r).all()


@pytest.mark.slow
def test_shards_merge_to_the_full_index(tmp_path, default_model):
    gal = tmp_path / "g"
    gal.mkdir()
    copy_some(gal, 12, step=5)
    full = tmp_path / "full"
    build_index(gal, full, model=default_model, workers=0, **FAST)
    shards = []
    for i in range(3):
        d = tmp_path / f"shard{i}"
        man = build_index(gal, d, model=default_model, workers=0, shard=f"{i}/3", **FAST)
        assert all(shard_of(it["path"], 3) == i for it in GalleryIndex(d).items)
        shards.append(d)
    merged = tmp_path / "merged"
    merge_indexes(merged, shards, progress=False, log=lambda m: None)
    a, b = GalleryIndex(full), GalleryIndex(merged)
    emb_a = {it["path"]: a.embeddings[a.view_rows([r])] for r, it in enumerate(a.items)}
    assert sorted(emb_a) == sorted(it["path"] for it in b.items)
    for r, it in enumerate(b.items):  # 4-bit codes: one step apart where a token fell on a rounding edge
        np.testing.assert_allclose(b.embeddings[b.view_rows([r])], emb_a[it["path"]], atol=2e-2)
    assert np.mean(np.abs(np.asarray(b.embeddings) - np.concatenate([emb_a[it["path"]] for it in b.items])) < 1e-6) \
        > 0.999
    assert man["source"]["shard"] == "2/3"


@pytest.mark.slow
def test_hnsw_and_cli(tmp_path, default_model, monkeypatch):
    gal = tmp_path / "g"
    gal.mkdir()
    copy_some(gal, 20, step=3)
    out = tmp_path / "hnsw"
    build_index(gal, out, model=default_model, workers=0, index_type="hnsw", **FAST)
    ix = GalleryIndex(out)
    assert ix.index_type == "hnsw" and type(ix.faiss).__name__ == "IndexHNSWFlat"
    q = ix.embeddings[3]
    images, scores, best_rows = ix.coarse_search(q, 5)
    per_view = ix.embeddings @ q
    per_image = np.array([per_view[ix.view_rows([i])].max() for i in range(len(ix))])
    assert images.tolist() == np.argsort(-per_image, kind="stable")[:5].tolist()
    np.testing.assert_allclose(per_view[best_rows], scores, atol=1e-5)
    assert (ix.owner[best_rows] == images).all()
    import mga.coarse

    cat = max(ix.categories, key=lambda c: len(ix.category_images(c)))
    members = set(ix.category_images(cat).tolist())
    expected = [int(i) for i in np.argsort(-per_image, kind="stable") if i in members][:3]
    for subset_max in (mga.coarse.EXACT_SUBSET_MAX, 0):  # the category scanned exactly, then HNSW over-fetched
        monkeypatch.setattr(mga.coarse, "EXACT_SUBSET_MAX", subset_max)
        assert ix.coarse_search(q, 3, cat)[0].tolist() == expected, subset_max
    import os

    from index_builder.__main__ import main

    for args in (["merge", "--help"], ["add", "--help"], ["remove", "--help"]):
        with pytest.raises(SystemExit) as ex:
            main(args)
        assert ex.value.code == 0
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    r = subprocess.run([sys.executable, "-m", "index_builder", "--help"], cwd=ROOT, capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 0 and "usage" in r.stdout and "merge" in r.stdout
    r = subprocess.run([sys.executable, "-m", "index_builder", "info", "--index", str(out)], cwd=ROOT,
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0 and json.loads(r.stdout)["faiss"]["type"] == "hnsw"


@pytest.mark.slow
def test_ctrl_c_stops_a_cli_build_which_then_resumes(tmp_path):
    """A terminal's Ctrl-C reaches the whole process group (the build and its decoding pool), here while the pool
    decodes: the build stops at once with a hint, leaves no process behind, and `--resume` finishes it from the
    chunks already written."""
    import os
    import signal
    import time

    gal = tmp_path / "g"
    gal.mkdir()
    big = gal / ".source" / "big.png"  # ~0.4 s to decode: a burst of 16 takes seconds, its encoding < 1 s
    big.parent.mkdir()  # a hidden folder: not indexed itself, and the links to it stay inside the gallery
    Image.open(TINY_JPEGS[0]).convert("RGB").resize((4000, 5000)).save(big, compress_level=1)
    for k in range(24):
        (gal / f"{k:02d}.png").symlink_to(big)
    out = tmp_path / "ix"
    cmd = [sys.executable, "-m", "index_builder", "--gallery", str(gal), "--out", str(out), "--chunk-size", "2",
           "--workers", "2", "--zoom-grid", "1"]  # with its progress bar, as a person runs it
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    # as from a terminal: SIGINT not ignored, even where this test itself was started in the background
    # (a shell's `cmd &` ignores SIGINT in what it starts, and Python then never raises KeyboardInterrupt)
    build = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True, start_new_session=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 600  # a bound for a hung build, not a guess at the machine's speed
    while not list(tmp_path.glob("ix.tmp-*/chunks/chunk-*.npz")) and time.monotonic() < deadline:
        assert build.poll() is None, build.stderr.read()
        time.sleep(0.02)
    # the first chunk is written: whatever the build does now (decoding the next burst on a slow machine,
    # encoding on a fast one), 22 of 24 photos are still to come, and Ctrl-C must stop it cleanly
    os.killpg(build.pid, signal.SIGINT)
    try:
        _, err = build.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(build.pid, signal.SIGKILL)
        pytest.fail("the build hung after Ctrl-C")
    assert build.returncode == 130 and "--resume" in err and not out.exists(), err
    deadline = time.monotonic() + 120  # the pool's processes are gone too (a bound, not a speed)
    while True:
        try:
            os.killpg(build.pid, 0)
        except ProcessLookupError:
            break
        if time.monotonic() > deadline:
            pytest.fail("decoding processes outlived the interrupted build")
        time.sleep(0.1)
    done = subprocess.run(cmd + ["--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "resuming" in done.stderr, done.stderr
    assert len(GalleryIndex(out)) == 24


def test_discover_consumer_layout_and_csv_keys(tmp_path):
    root = tmp_path / "c2s"
    (root / "Eval").mkdir(parents=True)
    (root / "Eval" / "list_eval_partition.txt").write_text(
        "3\nimage_pair_name_1 image_pair_name_2 item_id evaluation_status\n"
        "img/A/comsumer_01.jpg img/A/shop_01.jpg id_1 test\n"
        "img/A/comsumer_02.jpg img/A/shop_01.jpg id_1 test\n"
        "img/B/comsumer_01.jpg img/B/shop_01.jpg id_2 train\n")
    (root / "img" / "A").mkdir(parents=True)
    shutil.copy(TINY_JPEGS[0], root / "img" / "A" / "shop_01.jpg")
    gal = discover_gallery(root)
    assert gal.kind == "consumer2shop" and [e.path for e in gal.entries] == ["img/A/shop_01.jpg"]
    assert gal.entries[0].item_id == "id_1"


@pytest.mark.slow
def test_ivfpq_with_exact_rescoring_recovers_the_exact_neighbours(tmp_path, monkeypatch):
    """IVF-PQ over 12k clustered unit vectors (real FAISS): PQ candidates re-scored with the coarse embeddings
    rebuilt from the stored tokens give nearly the exact top 10, every returned score is the exact inner product,
    and a category filter (scanned exactly, or IVF-PQ over-fetched) returns only its members, nearly the exact
    ones."""
    import faiss

    import mga.coarse
    from index_builder.writer import Piece, write_index
    from index_builder.faiss_index import IVFPQ_MIN

    rng = np.random.default_rng(0)
    n, clusters, d = IVFPQ_MIN + 2000, 60, 16
    centres = rng.standard_normal((clusters, 3, d)).astype(np.float32)
    tokens = centres[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, 3, d)).astype(np.float32)
    tokens /= np.linalg.norm(tokens, axis=-1, keepdims=True)
    arrays = {"global": tokens[:, 0].astype(np.float16), "parts": tokens[:, 1:].astype(np.float16),
              "attn": np.zeros((n, 2, 1, 1), np.float16)}
    items = [{"path": f"v{i}.jpg", "root": 0, "item_id": f"v{i}", "category": "tees" if i % 5 else "pants",
              "width": 1, "height": 1, "thumb": None, "meta": {}} for i in range(n)]
    manifest = {"model": {}, "coarse": {"global_weight": 1 / 3}, "source": {"gallery": "synthetic"},
                "roots": [{"relative": ".", "absolute": "."}], "skipped": []}
    out = tmp_path / "ivfpq"
    out.mkdir()
    write_index(out, out, [Piece(arrays, np.arange(n))], items, manifest, "ivfpq", progress=False)
    ix = GalleryIndex(out)
    emb = np.asarray(ix.embeddings)  # rebuilt from the stored (4-bit) tokens: what FAISS indexed and re-scores
    np.testing.assert_allclose(emb, tokens.reshape(n, -1) / np.sqrt(3), atol=0.05)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1, atol=0.05)
    assert ix.index_type == "ivfpq" and type(ix.faiss).__name__ == "IndexIVFPQ" and ix.refine > 1
    hits = 0
    for qi in rng.integers(0, n, 50):
        q = emb[qi] + 0.05 * rng.standard_normal(emb.shape[1]).astype(np.float32)
        q /= np.linalg.norm(q)
        rows, scores, best_views = ix.coarse_search(q, 10)
        assert best_views.tolist() == rows.tolist()  # one view per image: images and rows coincide
        np.testing.assert_allclose(scores, emb[rows] @ q, rtol=1e-5, atol=1e-6)
        assert np.all(np.diff(scores) <= 0)
        hits += len(set(rows.tolist()) & set(np.argsort(-(emb @ q))[:10].tolist()))
    assert hits / 500 >= 0.95
    ivf = faiss.extract_index_ivf(ix.faiss)
    assert ivf.parallel_mode == 1  # one query's lists split over the threads: the same answers as one thread's
    split = [ix.coarse_search(emb[qi], 10) for qi in range(5)]
    ivf.parallel_mode = 0
    for one, two in zip(split, [ix.coarse_search(emb[qi], 10) for qi in range(5)]):
        assert np.array_equal(one[0], two[0]) and np.array_equal(one[1], two[1])
    pants = np.arange(0, n, 5)  # a fifth of the gallery
    assert ix.category_images("pants").tolist() == pants.tolist()
    for subset_max in (mga.coarse.EXACT_SUBSET_MAX, 0):  # the category scanned exactly, then IVF-PQ over-fetched
        monkeypatch.setattr(mga.coarse, "EXACT_SUBSET_MAX", subset_max)
        hits = 0
        for qi in rng.integers(0, n, 20):
            q = emb[qi] / np.linalg.norm(emb[qi])
            rows, scores, _ = ix.coarse_search(q, 10, "pants")
            assert len(rows) == 10 and set(rows.tolist()) <= set(pants.tolist())
            np.testing.assert_allclose(scores, emb[rows] @ q, rtol=1e-5, atol=1e-6)
            hits += len(set(rows.tolist()) & set(pants[np.argsort(-(emb[pants] @ q))[:10]].tolist()))
        assert hits / 200 >= (1.0 if subset_max else 0.9), subset_max


def test_auto_index_type_counts_vectors_not_images(tmp_path, monkeypatch):
    """`auto` picks the FAISS type by the vectors it will hold: with zoom views, 100 images of 6 views are 600
    vectors, above a flat limit of 500, so they get IVF-PQ (and the index still maps views to images)."""
    from index_builder import faiss_index
    from index_builder.writer import Piece, write_index

    monkeypatch.setattr(faiss_index, "FLAT_MAX", 500)
    monkeypatch.setattr(faiss_index, "IVFPQ_MIN", 500)
    rng = np.random.default_rng(0)
    images, per_image, d = 100, 6, 8
    n = images * per_image
    tokens = rng.standard_normal((n, 3, d)).astype(np.float32)
    tokens /= np.linalg.norm(tokens, axis=-1, keepdims=True)
    arrays = {"global": tokens[:, 0].astype(np.float16), "parts": tokens[:, 1:].astype(np.float16),
              "attn": np.zeros((n, 2, 1, 1), np.float16)}
    items = [{"path": f"v{i}.jpg", "root": 0, "item_id": f"v{i}", "category": "", "width": 1, "height": 1,
              "thumb": None, "meta": {}} for i in range(images)]
    out = tmp_path / "views"
    out.mkdir()
    manifest = {"model": {}, "source": {"gallery": "synthetic"}, "roots": [{"relative": ".", "absolute": "."}],
                "skipped": []}
    write_index(out, out, [Piece(arrays, np.arange(n), np.full(images, per_image))], items, manifest, "auto",
                progress=False)
    ix = GalleryIndex(out)
    assert manifest["faiss"]["type"] == ix.index_type == "ivfpq"
    assert len(ix) == images and ix.views == n and ix.view_count(np.arange(images)).tolist() == [per_image] * images


def test_broken_weights_write_no_index(tmp_path, default_model):
    """Weights that give NaN (a corrupted tensor) must not leave an index whose every search returns nothing."""
    gal = tmp_path / "gallery"
    copy_some(gal, 3)
    broken = copy.deepcopy(default_model)
    with torch.no_grad():
        broken.global_proj.weight[0, 0] = float("nan")
    with pytest.raises(BuildError, match="non-finite"):
        build_index(gal, tmp_path / "index", model=broken, workers=0, **FAST)
    assert not (tmp_path / "index").exists()


@pytest.mark.slow
def test_thumbnails_are_what_results_show(tmp_path, default_model):
    """--thumb-size: bigger originals get a small copy inside the index, which display_path hands out; smaller
    ones show themselves."""
    gal = tmp_path / "gallery"
    rels = copy_some(gal, 2)
    Image.open(gal / rels[0]).convert("RGB").resize((900, 1200)).save(gal / rels[0])
    build_index(gal, tmp_path / "index", model=default_model, thumb_size=128, workers=0, **FAST)
    ix = GalleryIndex(tmp_path / "index")
    by_path = {ix.relative_path(i): i for i in range(len(ix))}
    big, small = by_path[rels[0]], by_path[rels[1]]
    thumb = ix.display_path(big)
    assert thumb.is_relative_to(tmp_path / "index" / "thumbs") and max(Image.open(thumb).size) == 128
    assert ix.display_path(small) == ix.image_path(small) == gal / rels[1]


def test_ctrl_c_inside_a_chunk_write_is_an_interruption_not_an_error(tmp_path, monkeypatch, capsys):
    """Ctrl-C while np.savez writes a chunk makes its zip fail to close (ValueError, raised while handling the
    KeyboardInterrupt): the CLI must still say 'interrupted ... --resume' and exit 130."""
    import index_builder
    from index_builder.__main__ import main

    def interrupted_in_savez(*args, **kwargs):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise ValueError("Can't close the ZIP file while there is an open writing handle on it.")

    monkeypatch.setattr(index_builder, "build_index", interrupted_in_savez)
    gal = tmp_path / "g"
    copy_some(gal, 1)
    assert main(["--gallery", str(gal), "--out", str(tmp_path / "ix")]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "--resume" in err and "ZIP" not in err


def test_names_that_are_not_utf8_are_skipped_and_named(tmp_path, default_model):
    """A file or folder name that is not UTF-8 (a file copied from an old Windows share, say) cannot be named in
    the index's JSON nor by a browser: the build skips it, names it with its bytes escaped in the log and in
    skipped.txt, and indexes the rest."""
    import os

    gal = tmp_path / "g"
    rels = copy_some(gal, 2)
    shutil.copy(TINY_JPEGS[3], os.fsencode(gal) + b"/\xff-photo.jpg")
    os.mkdir(os.fsencode(gal) + b"/d\xe9j\xe0")
    shutil.copy(TINY_JPEGS[4], os.fsencode(gal) + b"/d\xe9j\xe0/vu.jpg")
    logged = []
    man = build_index(gal, tmp_path / "ix", model=default_model, workers=0, progress=False, log=logged.append,
                      zoom=FAST["zoom"])
    assert sorted(it["path"] for it in GalleryIndex(tmp_path / "ix").items) == sorted(rels)
    skipped = {s["path"]: s["error"] for s in man["skipped"]}
    assert set(skipped) == {"\\xff-photo.jpg", "d\\xe9j\\xe0/vu.jpg"} and "not UTF-8" in skipped["\\xff-photo.jpg"]
    report = (tmp_path / "ix" / "skipped.txt").read_text(encoding="utf-8")
    assert "\\xff-photo.jpg\t" in report and "d\\xe9j\\xe0/vu.jpg\t" in report
    assert any("\\xff-photo.jpg" in line and "not UTF-8" in line for line in logged)


def test_long_csv_fields_are_read_and_a_row_too_long_is_skipped_by_line(tmp_path):
    """A metadata CSV with a 200 kB cell (past Python's csv limit of 128 kB) is read; a row with a cell past the
    builder's own limit is skipped and named by its line, its image kept without metadata."""
    import csv

    from index_builder.gallery import CSV_FIELD_MAX

    gal = tmp_path / "g"
    rels = copy_some(gal, 3)
    long, too_long = "long " * 40_000, "x" * (CSV_FIELD_MAX + 1)
    with open(gal / "metadata.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerows([["path", "item_id", "description"], [rels[0], "sku-0", long], [rels[1], "sku-1", too_long],
                     [rels[2], "sku-2", "short"]])
    limit = csv.field_size_limit()
    gallery = discover_gallery(gal)
    by_path = {e.path: e for e in gallery.entries}
    assert by_path[rels[0]].meta == {"description": long} and by_path[rels[0]].item_id == "sku-0"
    assert by_path[rels[1]].meta == {} and by_path[rels[1]].item_id == rels[1].rsplit(".", 1)[0]
    assert by_path[rels[2]].item_id == "sku-2"
    assert len(gallery.warnings) == 1 and "metadata.csv, line 3" in gallery.warnings[0], gallery.warnings
    assert csv.field_size_limit() == limit  # the process's own limit is left as it was
    (gal / "metadata.csv").write_bytes(b"path,item_id\n\xff\xfe.jpg,x\n")
    with pytest.raises(ValueError, match="metadata.csv: not UTF-8 text"):
        discover_gallery(gal)


def synthetic_index(out, images: int, thumbs: dict[int, str] | None = None, meta: dict | None = None):
    """A small index written by the real writer from random unit vectors (one view per image)."""
    from index_builder.writer import Piece, write_index

    rng = np.random.default_rng(0)
    tokens = rng.standard_normal((images, 3, 8)).astype(np.float32)
    tokens /= np.linalg.norm(tokens, axis=-1, keepdims=True)
    arrays = {"global": tokens[:, 0].astype(np.float16), "parts": tokens[:, 1:].astype(np.float16),
              "attn": np.zeros((images, 2, 1, 1), np.float16)}
    items = [{"path": f"v{i}.jpg", "root": 0, "item_id": f"v{i}", "category": "", "width": 1, "height": 1,
              "thumb": (thumbs or {}).get(i), "meta": meta or {}} for i in range(images)]
    out.mkdir(exist_ok=True)
    manifest = {"model": {}, "source": {"gallery": "synthetic"}, "roots": [{"relative": "."}], "skipped": []}
    return write_index(out, out, [Piece(arrays, np.arange(images))], items, manifest, "flat", progress=False)


def test_the_writer_refuses_items_an_index_may_not_hold(tmp_path, monkeypatch):
    """The reader caps items.jsonl by the index's size (mga.index_format.items_max_bytes); the writer checks what it
    writes against the same cap, so that no build ends in an index that does not open."""
    import mga.index_format

    monkeypatch.setattr(mga.index_format, "ITEMS_BASE_BYTES", 4096)
    monkeypatch.setattr(mga.index_format, "ITEMS_BYTES_PER_VIEW", 512)
    synthetic_index(tmp_path / "ok", 4, meta={"note": "x" * 100})
    assert len(GalleryIndex(tmp_path / "ok")) == 4
    with pytest.raises(BuildError, match="items.jsonl would be"):
        synthetic_index(tmp_path / "big", 4, meta={"note": "x" * 2000})


def test_merge_copies_only_thumbnails_that_are_images_of_the_index(tmp_path):
    """A thumbnail that is a link out of its index folder (or not an image) is not carried into a merged index
    (its results then show the original); a real one is, byte for byte."""
    from index_builder import merge_indexes

    src = tmp_path / "src"
    (src / "thumbs").mkdir(parents=True)
    for i in range(3):
        shutil.copy(TINY_JPEGS[i], src / f"v{i}.jpg")
    shutil.copy(TINY_JPEGS[5], src / "thumbs" / "good.jpg")
    shutil.copy(TINY_JPEGS[6], tmp_path / "elsewhere.jpg")
    (src / "thumbs" / "out.jpg").symlink_to(tmp_path / "elsewhere.jpg")
    (src / "thumbs" / "text.jpg").write_text("not an image")
    synthetic_index(src, 3, thumbs={0: "thumbs/good.jpg", 1: "thumbs/out.jpg", 2: "thumbs/text.jpg"})
    merge_indexes(tmp_path / "merged", [src], progress=False, log=lambda msg: None)
    ix = GalleryIndex(tmp_path / "merged")
    thumbs = {it["path"]: it["thumb"] for it in ix.items}
    assert thumbs == {"v0.jpg": "thumbs/good.jpg", "v1.jpg": None, "v2.jpg": None}
    assert ix.read_image(0, display=True) == (src / "thumbs" / "good.jpg").read_bytes()
    assert not (tmp_path / "merged" / "thumbs" / "out.jpg").exists()
