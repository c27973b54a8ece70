"""The benchmark runs end to end on the tiny bundles, reports every stage, and its agreement
check between the fast pipeline and the naive pytorch-grad-cam reference holds (and can fail)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # `bench` is a top-level package of the repository
FULLRES = REPO / "tests" / "data" / "fullres" / "images"
METHODS = ("gradcam", "gradcam++", "hirescam", "xgradcam", "layercam", "eigencam")


def test_cli_help():
    out = subprocess.run([sys.executable, "-m", "bench", "--help"], cwd=REPO, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    for flag in ("--models", "--repeats", "--out", "--device", "--markdown"):
        assert flag in out.stdout


def test_benchmark_on_tiny_bundles(tiny_models_dir, tmp_path, capsys):
    from bench.run import main

    out, md = tmp_path / "bench.json", tmp_path / "bench.md"
    rc = main(["--models", str(tiny_models_dir), "--repeats", "1", "--out", str(out), "--markdown", str(md),
               "--device", "cpu", "--images", str(FULLRES / "*.jpg"), "--max-images", "2",
               "--batch-images", "6", "--batch-size", "4", "--train-steps", "1", "--train-batch", "4",
               "--skip", "cold"])  # the cold start has its own test below
    assert rc == 0
    r = json.loads(out.read_text())

    m = r["machine"]
    for key in ("cpu_model", "cpus_usable", "torch_threads", "torch", "loadavg_at_start", "gpu"):
        assert key in m
    cpu = r["devices"]["cpu"]
    ana = cpu["analysis"]
    fast_stages = {"decode_resize", "classify", "cam_backward", "tta", "feature_maps", "segment", "measure",
                   "quality", "render", "total"} | {f"cam:{x}" for x in METHODS}
    naive_stages = {"load_models", "decode_resize", "classify", "tta", "feature_maps", "segment", "measure",
                    "render", "total"} | {f"cam:{x}" for x in METHODS}
    assert fast_stages <= set(ana["fast"]), fast_stages - set(ana["fast"])
    assert naive_stages <= set(ana["naive"]), naive_stages - set(ana["naive"])
    for stats in list(ana["fast"].values()) + list(ana["naive"].values()):
        assert stats["n"] == 2 and stats["median"] >= 0 and stats["p95"] >= stats["min"]
    assert {"decode_resize", "classify_and_cam", "tta", "cam_render", "segment", "measure"} <= set(
        ana["fast_pipeline_timings"])
    assert ana["speedup_median"] > 0

    agree = ana["agreement"]
    assert agree["ok"], agree
    assert agree["n_images"] == 2
    assert agree["prob_max_abs_diff"] <= 1e-4
    assert agree["masks_identical"] is True
    assert set(agree["cams"]) == set(METHODS)
    assert agree["feature_maps"]["same_channels"]

    assert cpu["batch"]["images"] == 6 and cpu["batch"]["images_per_s"]["median"] > 0
    assert "cold_start" not in cpu and r["config"]["skip"] == ["cold"]
    assert set(cpu["training"]) == {"classifier", "segmenter"}
    for t in cpu["training"].values():
        assert t["images_per_s"]["median"] > 0 and t["batch_size"] == 4

    nets = cpu["models"]
    assert set(nets) == {"classifier", "segmenter"}
    for part, n in nets.items():
        weights = tiny_models_dir / part / "weights.safetensors"
        assert n["weights_mb"] == round(weights.stat().st_size / 2**20, 2)
        assert n["parameters"] > 0 and n["forward_ms"]["n"] == 30 and n["forward_ms"]["median"] > 0

    names = [t["target"] for t in r["targets"]]
    # issue 22: the one input path's cost per image, with its 5 ms target
    assert cpu["input_path"]["ms_per_image"]["median"] > 0 and "the one input path, per image (median)" in names
    assert len(names) == 12 and all(t["pass"] is not None for t in r["targets"] if t["target"] != "cold start to first result")
    # issue 16: runtimes side by side, the torch path in the same run, load and memory
    eng = cpu["engines"]["classifier"]["runtimes"]
    assert {"torch eager (NCHW)", "torch channels_last", "onnxruntime"} <= set(eng)
    assert all(v["max_abs_diff"] < 1e-4 and v["batch4"]["median"] > 0 for v in eng.values())
    assert ana["speedup_vs_torch_path"] > 0 and "forward-only" in ana["runtime"]["cam"]
    assert cpu["concurrent"]["analyses"] == 4 * 1 and cpu["concurrent"]["latency_ms"]["p95"] > 0
    assert cpu["memory"]["sessions"] == 8 and cpu["memory"]["peak_rss_mb"] > 100
    mem = cpu["memory"]   # the resident set split: anonymous memory and the libraries' file-backed pages
    assert mem["rss_anon_mb"] > 50 and mem["rss_file_mb"] > 10
    assert abs(mem["rss_anon_mb"] + mem["rss_file_mb"] - mem["rss_mb"]) < 0.02 * mem["rss_mb"]
    from bench.report import readme_table

    table = readme_table(r)
    assert "| full analysis of one image" in table and "onnxruntime" in table and "torch path" in table
    assert {"classifier forward pass, one image (median)", "classifier weights file", "segmenter weights file"} <= set(names)
    text = md.read_text()
    assert "| stage |" in text and "CAM: eigencam" in text and "images/s" in text
    assert "| network | arch |" in text and "test_resnet" in text
    assert "| stage |" in capsys.readouterr().out  # the table is printed too


def test_cold_start_runs_a_fresh_process(tiny_models_dir):
    from bench.cold_start import bench_cold_start

    cold = bench_cold_start(tiny_models_dir, sorted(FULLRES.glob("*.jpg"))[0], "cpu", METHODS, runs=1)
    for key in ("process_wall_s", "import_s", "load_s", "first_analysis_s"):
        assert cold[key] > 0
    assert cold["process_wall_s"] >= cold["import_s"] + cold["load_s"] + cold["first_analysis_s"]
    assert cold["runs"] == 1


def test_agreement_check_catches_differences(tiny_models_dir):
    """The comparison is not vacuous: a wrong CAM, probability or mask makes it fail."""
    import copy

    from bench.naive import naive_analyze
    from bench.agreement import compare_outputs
    from model.inference.pipeline import Analyzer

    analyzer = Analyzer.from_dir(tiny_models_dir, "cpu")
    data = sorted(FULLRES.glob("*.jpg"))[0].read_bytes()
    fast = analyzer.analyze(data, cam_methods=METHODS, tta=True, feature_layer=analyzer.layers[-1])
    naive = naive_analyze(tiny_models_dir, data, METHODS, tta=True, feature_layer=-1)
    size = analyzer.classifier.input_size
    assert compare_outputs(fast, naive, size)["ok"]

    bad = copy.deepcopy(naive)
    bad.cams["gradcam"] = bad.cams["gradcam"][::-1, ::-1].copy()  # upside-down map
    bad.cams["gradcam"][:10] = 1.0
    res = compare_outputs(fast, bad, size)
    assert not res["ok"] and not res["cams"]["gradcam"]["ok"]

    bad = copy.deepcopy(naive)
    bad.probabilities = bad.probabilities.copy()
    bad.probabilities[0] += 1e-3
    assert not compare_outputs(fast, bad, size)["ok"]

    if naive.lesion_mask is not None:
        bad = copy.deepcopy(naive)
        bad.lesion_mask = bad.lesion_mask.copy()
        bad.lesion_mask[0, 0] = ~bad.lesion_mask[0, 0]
        assert not compare_outputs(fast, bad, size)["ok"]

    # EigenCAM: the other SVD sign counts as agreeing (the sign is arbitrary) and says so; another map does not
    from bench.naive import eigencam_flipped

    shape = fast.image.shape[:2]
    row = compare_outputs(fast, naive, size)["cams"]["eigencam"]
    if "note" in row:  # on this model our SVD sign is the library's opposite
        assert row["ok"] and "sign" in row["note"]
    else:
        other = copy.deepcopy(fast)
        other.cams["eigencam"] = eigencam_flipped(naive.eigencam_activations, size, shape)
        row = compare_outputs(other, naive, size)["cams"]["eigencam"]
        if (row["corr"] or 0) < 0.99 and row["max_abs_diff"] >= 0.05:  # the flip changed the map
            assert row["ok"] and "sign" in row["note"]
    wrong = copy.deepcopy(fast)
    wrong.cams["eigencam"] = np.random.default_rng(0).random(shape).astype(np.float32)
    assert not compare_outputs(wrong, naive, size)["cams"]["eigencam"]["ok"]


def test_recipe_table_reads_the_bundles(tiny_classifier_dir, tmp_path, capsys):
    import json

    from bench.recipe_table import main as recipe_table

    meta = json.loads((tiny_classifier_dir / "meta.json").read_text())
    assert recipe_table([str(tiny_classifier_dir), str(tmp_path)]) == 0   # tmp_path: no bundle, skipped
    out = capsys.readouterr()
    lines = out.out.strip().splitlines()
    assert len(lines) == 3 and "no meta.json" in out.err
    cells = [c.strip() for c in lines[2].strip("|").split("|")]
    assert cells[1] == "test_resnet" and cells[2] == "64x80"
    assert cells[3] == "scratch" and cells[4] == "lr 0.002"
    assert cells[7] == "–"  # the tiny bundle: no smoothing, mixing or EMA
    assert cells[8] == str(len(meta["history"]))
    kept = meta["best_epoch"]
    test = meta["metrics"]["test"]
    assert cells[10] == f"{meta['history'][kept - 1]['val_balanced_accuracy']:.3f} ({kept})"
    assert cells[11] == f"{test['balanced_accuracy']:.3f}"
    assert cells[14] == f"{test['ece_after_temperature']:.3f}"
    assert cells[15] == f"{test['melanoma_flag_sensitivity']:.2f} / {test['melanoma_flag_specificity']:.2f}"


def test_recipe_table_names_the_start_and_the_fine_tuning():
    from bench.recipe_table import fine_tuning, start

    assert start({"pretrained": {"source": "package"}}) == "ImageNet (package)"
    assert start({"train_config": {"pretrained": False}}) == "scratch"
    assert fine_tuning({"lr": 1e-3, "body_lr_mult": 0.1, "freeze_epochs": 1, "freeze_bn": True}) == \
        "lr 0.001, body x0.1, head only 1 ep., BN frozen"


def test_recipe_table_names_the_regularisation():
    from bench.recipe_table import regularisation

    assert regularisation({"label_smoothing": 0.1, "mixup": 0.2, "cutmix": 1.0, "ema": 0.999, "lr": 1}) == \
        "smoothing 0.1, mixup 0.2, CutMix 1, EMA 0.999"
    assert regularisation({"label_smoothing": 0.0, "ema": 0.0}) == "–"


def test_calibration_check_on_a_tiny_bundle(tiny_classifier_dir, capsys):
    import json

    from bench.calibration_check import main as calibration_check
    from model.nets.bundle import read_meta

    data = REPO / "tests" / "data" / "ham_small"
    assert calibration_check([str(tiny_classifier_dir), "--data", str(data)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["split"] == "val" and out["n"] == read_meta(tiny_classifier_dir)["data"]["split_sizes"]["val"]
    assert out["temperature"] == read_meta(tiny_classifier_dir)["temperature"]
    for v in (out["ece_raw"], out["ece_with_temperature"], out["prior_adjusted"]["ece"],
              out["balanced_accuracy"], out["prior_adjusted"]["balanced_accuracy"]):
        assert 0.0 <= v <= 1.0
    assert 0 <= out["images_with_abs_logit_over_50"] <= out["n"]
    assert out["max_abs_logit"] >= out["median_max_abs_logit"] > 0


def test_training_speed_includes_mixing_when_the_bundle_used_it(tiny_classifier_dir, tmp_path):
    import json
    import shutil

    from bench.training_speed import bench_training

    bundle = tmp_path / "classifier"
    shutil.copytree(tiny_classifier_dir, bundle, ignore=shutil.ignore_patterns(".train"))
    assert bench_training(bundle, "cpu", steps=1, batch_size=4, data_dir=None)["mixing"] is False
    meta = json.loads((bundle / "meta.json").read_text())
    meta["train_config"].update(mixup=0.2, cutmix=1.0)
    (bundle / "meta.json").write_text(json.dumps(meta))
    result = bench_training(bundle, "cpu", steps=2, batch_size=4, data_dir=None)
    assert result["mixing"] is True and result["steps_timed"] == 2 and result["images_per_s"]["median"] > 0


def test_train_formats_prints_every_combination(capsys):
    from bench.train_formats import main as train_formats

    assert train_formats(["--arch", "test_resnet", "--size", "32", "32", "--batch", "4", "--steps", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| test_resnet")]
    assert len(rows) == 4
    assert {tuple(c.strip() for c in r.strip("|").split("|")[1:3]) for r in rows} == {
        ("contiguous", "fp32"), ("channels-last", "fp32"), ("contiguous", "bf16 autocast"),
        ("channels-last", "bf16 autocast")}
    assert all(float(r.strip("|").split("|")[3]) > 0 for r in rows)


def test_ensemble_of_one_model_twice_gains_nothing(tiny_classifier_dir, ham_small, capsys):
    from bench.ensemble import main

    assert main([str(tiny_classifier_dir), str(tiny_classifier_dir), "--data", str(ham_small)]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| classifier")]
    assert len(rows) == 3 and rows[0].split("|")[2:] == rows[2].split("|")[2:]  # same figures as the member
    assert "+0.000 balanced accuracy (below the 0.02" in out


def test_load_warning_reads_the_measured_busy_share_before_the_load_average():
    from bench.common import cpu_busy_share
    from bench.run import load_warning

    # a job that ended seconds ago leaves the load average high while the CPUs are idle: no warning
    assert load_warning({"cpu_busy_at_start": 0.02, "loadavg_at_start": [1.1, 1.3, 1.4]}) is None
    busy = load_warning({"cpu_busy_at_start": 0.5, "loadavg_at_start": [0.2, 0.2, 0.2]})
    assert busy and "50% of the CPUs were busy" in busy and "rerun on an idle machine" in busy
    # without /proc/stat the load average decides
    assert "load average 0.9" in load_warning({"cpu_busy_at_start": None, "loadavg_at_start": [0.9, 1, 1]})
    assert load_warning({"cpu_busy_at_start": None, "loadavg_at_start": [0.3, 1, 1]}) is None
    share = cpu_busy_share(0.2)
    assert share is None or 0.0 <= share <= 1.0
