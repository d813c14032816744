"""A short real training run on Luma-tiny through training.train.main, resume, determinism, then
training.evaluate.main."""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from conftest import LUMA_TINY
from mga.config import PROJECT_ROOT
from training import evaluate as mga_evaluate
from training import train as mga_train
from training.part_slots import PART_PARAMETERS

pytestmark = pytest.mark.slow

ARGS = ["--data", str(LUMA_TINY), "--image-size", "64", "--p", "4", "--k", "2", "--workers", "0",
        "--freeze-blocks", "3", "--seed", "0"]


def run(out, epochs: int, *extra: str) -> dict:
    return mga_train.main([*ARGS, "--out", str(out), "--epochs", str(epochs), *extra])


def metrics(out) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "out"
    summary = run(out, 2)
    return out, summary


def test_training_writes_model_metrics_and_eval(trained):
    out, summary = trained
    assert (out / "model" / "config.json").is_file() and (out / "model" / "model.safetensors").is_file()
    cfg = json.loads((out / "model" / "config.json").read_text())
    assert cfg["image_size"] == 64 and cfg["backbone"] == "tf_efficientnet_lite0"
    assert cfg["extra"]["train_images"] == 341
    assert cfg["figure_head"] is True
    assert cfg["anchor"] == 0.5, "the recipe anchors the model in the pretrained backbone (training.anchor)"
    stored = safe_open(out / "model" / "model.safetensors", "pt").keys()
    assert any(k.startswith("anchor.") for k in stored) and any(k.startswith("backbone.") for k in stored)
    assert cfg["extra"]["train_args"]["backgrounds"] == "../shared/data/distractors/validation", \
        "real backgrounds from the distractors' validation split only, recorded without the machine's folders"
    names = cfg["part_names"]
    assert {"*top", "*bottom", "pants", "shorts", "jackets", "tees"} <= set(names), "per category and per kind"
    for row in names.values():
        assert len(row) == 6 and len(set(row)) == 6, "every part of a category reads apart (numbered if need be)"
    lines = metrics(out)
    assert [r["epoch"] for r in lines] == [1, 2]
    for r in lines:
        losses = {k: v for k, v in r.items() if k.startswith("loss_")}
        assert set(losses) == {"loss_global", "loss_coarse", "loss_ata", "loss_div", "loss_background",
                               "loss_concentration", "loss_consistency", "loss_figure"}
        assert all(math.isfinite(v) and v >= 0 for v in losses.values())
    assert lines[1]["step"] == 2 * (341 // 8)
    ev = json.loads((out / "eval.json").read_text())
    for name in ("coarse", "ata"):
        assert ev[name]["R@1"] <= ev[name]["R@10"] <= ev[name]["R@50"]
    assert ev["fingerprint"] == summary["fingerprint"]
    assert (out / "checkpoint.pt").is_file()
    assert not list(out.glob("*.tmp*"))


def test_resume_after_finished_run_does_not_retrain_then_continues(trained, tmp_path):
    src, summary = trained
    out = tmp_path / "out"
    shutil.copytree(src, out)
    again = run(out, 2, "--resume")
    assert len(metrics(out)) == 2, "all epochs were done: nothing to train"
    a, b = load_file(src / "model" / "model.safetensors"), load_file(out / "model" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), "weights unchanged by a no-op resume"
    assert again["ata"] == summary["ata"]

    more = run(out, 3, "--resume")
    lines = metrics(out)
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    assert lines[2]["step"] == 3 * (341 // 8)
    assert all(math.isfinite(v) for k, v in lines[2].items() if k.startswith("loss_"))
    assert more["fingerprint"] != summary["fingerprint"]


def test_same_seed_gives_the_same_losses(trained, tmp_path):
    """The first epoch is all warm-up, so its learning rates do not depend on --epochs: a 1-epoch run with the
    same seed must reproduce epoch 1 of the 2-epoch run exactly."""
    src, _ = trained
    run(tmp_path / "again", 1)
    assert metrics(tmp_path / "again")[0] | {"seconds": 0} == metrics(src)[0] | {"seconds": 0}


def test_evaluate_cli_writes_json_and_plot(trained, tmp_path):
    out, summary = trained
    js, png = tmp_path / "eval.json", tmp_path / "recall.png"
    result = mga_evaluate.main(["--data", str(LUMA_TINY), "--weights", str(out / "model"), "--workers", "0",
                                "--json", str(js), "--plot", str(png)])
    saved = json.loads(js.read_text())
    values = [saved[f"R@{k}"] for k in (1, 5, 10, 20, 30, 40, 50)]
    assert values == sorted(values), "recall@K never decreases with K"
    assert saved["queries"] == 142 and saved["gallery"] == 183
    assert saved["format"] == "inshop" and saved["rerank_top"] > 0
    assert saved == json.loads(json.dumps(result))
    assert saved["R@1"] == pytest.approx(summary["ata"]["R@1"]), "same model, same protocol as train's eval"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000


def test_proxy_anchor_term_trains_and_resumes(tmp_path):
    out = tmp_path / "proxy"
    run(out, 1, "--w-proxy", "0.1")
    proxies = torch.load(out / "checkpoint.pt", weights_only=True)["proxy"]["proxies"]
    assert proxies.shape == (75, 128 * 7), "one proxy per training item, in the coarse embedding's space"
    run(out, 2, "--w-proxy", "0.1", "--resume")
    lines = metrics(out)
    assert [r["epoch"] for r in lines] == [1, 2]
    assert all(math.isfinite(r["loss_proxy"]) and r["loss_proxy"] > 0 for r in lines)
    moved = torch.load(out / "checkpoint.pt", weights_only=True)["proxy"]["proxies"]
    assert not torch.equal(moved, proxies), "the resumed run keeps training the restored proxies"


def test_sweep_runs_recipes_and_tabulates_them(tmp_path):
    from bench import sweep

    out = tmp_path / "sweep"
    common = ["--image-size", "64", "--p", "4", "--k", "2", "--freeze-blocks", "3", "--epochs", "1"]
    results = sweep.main(["--data", str(LUMA_TINY), "--out", str(out), "--seeds", "0", "--workers", "0",
                          "--recipe", "plain=--detail 0", "--recipe", "broken=--backbone no_such_net",
                          "--train-args", *common])
    by = {r["recipe"]: r for r in results}
    assert 0.0 <= by["plain"]["eval"]["ata"]["R@1"] <= 1.0 and "error" not in by["plain"]
    assert "error" in by["broken"] and "eval" not in by["broken"], "a failed run is recorded, the sweep goes on"
    assert [json.loads(line)["recipe"] for line in (out / "results.jsonl").read_text().splitlines()] == \
        [r["recipe"] for r in results]
    table = (out / "table.md").read_text()
    assert f"| plain | {by['plain']['eval']['coarse']['R@1']:.3f} ± 0.000 |" in table
    assert "| broken | - |" in table


def test_distillation_term_trains_on_real_photos(tmp_path):
    """--w-distill: the frozen backbone's similarities among real validation photos enter the loss, every
    epoch, as a finite number between 0 (the teacher's ranking kept) and 2 (reversed)."""
    out = tmp_path / "distill"
    run(out, 2, "--w-distill", "1", "--distill-batch", "6")
    lines = metrics(out)
    assert [r["epoch"] for r in lines] == [1, 2]
    assert all(0 < r["loss_distill"] < 2 for r in lines)
    assert json.loads((out / "model" / "config.json").read_text())["extra"]["train_args"]["w_distill"] == 1


def test_anchor_share_outside_0_1_is_refused_before_training(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run(tmp_path / "out", 1, "--anchor", "1")
    assert "--anchor 1: the share must lie in [0, 1)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_fresh_run_into_a_checkpoint_folder_is_refused_and_loses_nothing(trained, tmp_path, capsys):
    src, _ = trained
    out = tmp_path / "out"
    shutil.copytree(src, out)
    before = (out / "checkpoint.pt").read_bytes(), (out / "metrics.jsonl").read_text()
    with pytest.raises(SystemExit):
        run(out, 2)
    assert "checkpoint.pt exists: pass --resume" in capsys.readouterr().err
    assert ((out / "checkpoint.pt").read_bytes(), (out / "metrics.jsonl").read_text()) == before


def test_distillation_without_photos_says_which_folder(tmp_path):
    with pytest.raises(SystemExit, match="empty.*at least 3 .jpg photos, found 0"):
        run(tmp_path / "out", 1, "--w-distill", "1", "--distill-photos", str(tmp_path / "empty"))


def test_category_term_trains_and_the_anchor_can_pool_the_figure(tmp_path):
    """--w-category: the garment categories of the batch enter the loss as a finite multi-similarity term (here on
    the global token); --anchor-pool figure reaches the saved model."""
    out = tmp_path / "category"
    run(out, 1, "--w-category", "0.5", "--category-on", "global", "--anchor-pool", "figure")
    (line,) = metrics(out)
    assert math.isfinite(line["loss_category"]) and line["loss_category"] > 0
    config = json.loads((out / "model" / "config.json").read_text())
    assert config["anchor_pool"] == "figure" and config["extra"]["train_args"]["w_category"] == 0.5
    assert config["extra"]["train_args"]["category_on"] == "global"


def test_kind_term_trains_on_real_phone_photos(tmp_path):
    """--w-kind: real validation phone photos share the batch's forward pass and enter the loss as a finite
    multi-similarity term against the shop photos of their kind."""
    out = tmp_path / "kind"
    run(out, 1, "--w-kind", "0.5", "--kind-batch", "4")
    (line,) = metrics(out)
    assert math.isfinite(line["loss_kind"]) and line["loss_kind"] >= 0
    assert json.loads((out / "model" / "config.json").read_text())["extra"]["train_args"]["w_kind"] == 0.5


def test_layout_term_draws_parts_to_their_slots_and_needs_six_parts(tmp_path):
    """--w-layout: each part's attention near its slot's landmark (folded figure-box coordinates) enters the loss
    as a finite term in (0, 1], and --w-skin the parts' attention on the wearer's skin, a share in [0, 1); a model
    of another number of parts is refused, saying why."""
    out = tmp_path / "layout"
    run(out, 1, "--w-layout", "1", "--w-skin", "1")
    (line,) = metrics(out)
    assert 0 < line["loss_layout"] <= 1 and 0 <= line["loss_skin"] < 1
    args = json.loads((out / "model" / "config.json").read_text())["extra"]["train_args"]
    assert args["w_layout"] == 1 and args["w_skin"] == 1 and args["fold"] is True
    with pytest.raises(SystemExit, match="--w-layout: the layout prior has 6 part slots; the model has 4"):
        run(tmp_path / "four", 1, "--w-layout", "1", "--num-parts", "4")


def test_kind_term_without_kind_folders_says_which_folder(tmp_path):
    with pytest.raises(SystemExit, match="empty.*folders named t-shirt"):
        run(tmp_path / "out", 1, "--w-kind", "0.5", "--kind-photos", str(tmp_path / "empty"))


def test_anchor_from_the_start_trains_beside_a_frozen_pretrained_copy(tmp_path):
    """--anchor-from start: the losses see the anchored similarities from the first step, so the checkpoint carries
    the anchor; training leaves it the pretrained backbone and moves only the trained copy."""
    out = tmp_path / "start"
    run(out, 1, "--anchor-from", "start", "--anchor", "0.3")
    checkpoint = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert checkpoint["config"]["anchor"] == 0.3
    weights = load_file(out / "model" / "model.safetensors")
    fresh = mga_train.MGAModel.from_backbone(mga_train.MGAConfig(image_size=64, anchor=0.3)).state_dict()
    anchor = [k for k in weights if k.startswith("anchor.")]
    assert anchor and all(torch.equal(weights[k], fresh[k]) for k in anchor)  # frozen: the pretrained backbone
    assert not all(torch.equal(weights["backbone." + k.removeprefix("anchor.")], fresh[k]) for k in anchor)
    assert json.loads((out / "model" / "config.json").read_text())["anchor"] == 0.3


@pytest.mark.parametrize("twin", ["framed", "whole"])
def test_robust_fine_tuning_reads_spoilt_photos_as_their_clean_twins(trained, tmp_path, twin):
    """--init + --w-robust: a trained model, frozen, reads each photo's clean twin (framed as the spoilt photo, or
    the whole garment) and the fine-tuned copy is pulled towards it on the spoilt photo (and kept on the clean one);
    the term is positive (0: both read alike) and far below its worst case, and the saved model keeps the starting
    model's architecture and anchor."""
    src, _ = trained
    out = tmp_path / "robust"
    mga_train.main(["--data", str(LUMA_TINY), "--p", "4", "--k", "2", "--workers", "0", "--seed", "1",
                    "--out", str(out), "--epochs", "1", "--init", str(src / "model"), "--w-robust", "1",
                    "--robust-twin", twin, "--shopper", "1", "--w-global", "0", "--w-coarse", "0", "--w-ata", "0"])
    (line,) = metrics(out)
    assert 0 < line["loss_robust"] < 3
    start = json.loads((src / "model" / "config.json").read_text())
    tuned = json.loads((out / "model" / "config.json").read_text())
    assert (tuned["image_size"], tuned["anchor"]) == (start["image_size"], start["anchor"]) == (64, 0.5)
    assert tuned["extra"]["train_args"]["init"] == mga_train.portable(str(src / "model"))
    assert tuned["extra"]["train_args"]["robust_twin"] == twin


def test_a_path_recorded_with_the_weights_names_no_folder_of_the_machine():
    """config.json's train_args: an absolute path inside the project or beside it is recorded relative to the
    project (what a clone elsewhere reads the same); a relative path, or one elsewhere, as given."""
    beside, inside = PROJECT_ROOT.parent / "shared" / "data", PROJECT_ROOT / "runs" / "default"
    assert mga_train.portable(str(beside)) == os.path.join("..", "shared", "data")
    assert mga_train.portable(str(inside)) == os.path.join("runs", "default")
    assert mga_train.portable("../shared/data") == "../shared/data" and mga_train.portable(8) == 8
    elsewhere = Path(PROJECT_ROOT.anchor) / "elsewhere-than-the-project"
    if not elsewhere.is_relative_to(PROJECT_ROOT.parent):
        assert mga_train.portable(str(elsewhere)) == str(elsewhere)


def test_robust_term_without_init_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run(tmp_path / "out", 1, "--w-robust", "1")
    assert "--w-robust distils the --init model: pass --init" in capsys.readouterr().err


def test_parts_only_fine_tuning_moves_the_parts_and_nothing_else(trained, tmp_path):
    """--init + --parts-only: FGA and the parts' weights train; the backbone (BatchNorm statistics included), the
    global token, the figure head and the anchor come out exactly as they went in."""
    src, _ = trained

    def parts_run(name: str, *flags: str) -> dict:
        out = tmp_path / name
        mga_train.main(["--data", str(LUMA_TINY), "--p", "4", "--k", "2", "--workers", "0", "--seed", "1",
                        "--out", str(out), "--epochs", "1", "--init", str(src / "model"), "--parts-only",
                        "--w-layout", "1", *flags])
        return load_file(out / "model" / "model.safetensors")

    before, after = load_file(src / "model" / "model.safetensors"), parts_run("parts")
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith(PART_PARAMETERS) for k in moved), sorted(moved)[:5]
    assert any(k.startswith("fga.") for k in moved)
    # --new-parts: a fresh aggregator in their place, the rest as it was
    anew = parts_run("new-parts", "--new-parts", "--lr", "0")
    replaced = {k for k in before if not torch.equal(before[k], anew[k])}
    assert "fga.queries" in replaced and all(k.startswith(PART_PARAMETERS) for k in replaced)
    assert torch.equal(anew["part_logits"], torch.zeros_like(anew["part_logits"])), "parts weighed alike anew"
    # --new-slots: two slots anew and the only ones trained; the aggregator and the other slots as they were
    got = parts_run("new-slots", "--new-slots", "3", "4")
    changed = {k for k in before if not torch.equal(before[k], got[k])}
    assert "fga.queries" in changed and changed <= {"fga.queries", "part_logits"}, sorted(changed)
    kept = [0, 1, 2, 5]
    assert torch.equal(got["fga.queries"][kept], before["fga.queries"][kept])
    assert not torch.equal(got["fga.queries"][3], before["fga.queries"][3])


def test_parts_only_without_init_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        run(tmp_path / "out", 1, "--parts-only")
    assert "--parts-only trains the parts of trained weights: pass --init" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(tmp_path / "out", 1, "--new-parts")
    assert "--new-parts replaces the parts of trained weights and trains them alone: pass --parts-only" \
        in capsys.readouterr().err
    with pytest.raises(SystemExit):
        run(tmp_path / "out", 1, "--new-slots", "4")
    assert "--new-slots replaces some parts of trained weights and keeps the others" in capsys.readouterr().err


def test_parts_are_drawn_anew_only_on_a_fresh_run():
    """--new-parts on a resumed run keeps the checkpoint's aggregator (its training so far); on a fresh run it is
    drawn anew, and --parts-only trains nothing but the parts."""
    from mga.model import MGAModel
    from training.part_slots import parts_only

    model = MGAModel(mga_train.MGAConfig(num_parts=6))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    parts_only(model, new_parts=True, resumed=True)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    parts_only(model, new_parts=True, resumed=False)
    assert not torch.equal(before["fga.queries"], model.fga.queries)
    assert all(p.requires_grad == n.startswith(PART_PARAMETERS) for n, p in model.named_parameters())
