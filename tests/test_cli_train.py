"""`neuro train` end to end on a tiny run: metrics, weights, resolved model, figures; clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from neuro.cli import main
from neuro.model.spec import load_model

ROOT = os.path.join(os.path.dirname(__file__), "..")


def test_neuro_train_writes_every_output(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(["train", "yinyang_bptt", "--out", str(out), "--epochs", "1", "--max-train", "64",
               "--format", "posit16", "--seed", "4", "--quiet"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "yinyang_bptt: test_accuracy" in printed and str(out) in printed
    names = {p.name for p in out.iterdir()}
    assert {"metrics.json", "weights.safetensors", "model.toml", "learning_curve.png", "raster.png",
            "weights_hist.png"} <= names
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("test_accuracy", "train_accuracy", "epochs", "seconds", "format"):
        assert key in metrics, key
    assert metrics["epochs"] == 1 and metrics["format"] == ["posit16"] and metrics["seed"] == 4
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["seconds"] > 0
    for png in ("learning_curve.png", "raster.png", "weights_hist.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    resolved = load_model(out / "model.toml")  # the resolved model parses back to the trained graph
    assert resolved.projections["input_hidden"].format == "posit16"
    from safetensors.torch import load_file

    from neuro.numerics import POSIT16

    weights = load_file(out / "weights.safetensors")
    assert set(weights) == set(resolved.projections)
    w = weights["input_hidden"].double()
    assert w.shape == resolved.weight_shape("input_hidden")
    assert bool((POSIT16.quantize(w) == w).all())  # stored values are posit16 values


def test_bad_model_path_is_a_clear_error():
    proc = subprocess.run([sys.executable, "-m", "neuro", "train", "models/yinyang_bpt.toml", "--quiet"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "no model file 'models/yinyang_bpt.toml'" in proc.stderr
    assert "yinyang_bptt" in proc.stderr  # the nearest bundled model is suggested
    assert "Traceback" not in proc.stderr


def test_neuro_train_unusable_device_is_a_clear_error(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        device, why = "cuda:999", "torch device"
    else:
        device, why = "cuda", "CUDA is not available"
    rc = main(["train", "digits_bptt", "--out", str(tmp_path / "r"), "--epochs", "1", "--max-train", "32",
               "--device", device, "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2 and "--device" in err
    assert why in err or "invalid" in err.lower() or "out of range" in err.lower()
    assert not (tmp_path / "r" / "metrics.json").exists()


def test_neuro_models_lists_every_bundled_model(capsys):
    assert main(["models"]) == 0
    printed = capsys.readouterr().out
    for name in ("yinyang_bptt", "digits_bptt", "song2000_stdp", "crosscheck_ff"):
        assert name in printed
    assert "(invalid" not in printed


def test_neuro_plan_budget_exit_codes(capsys):
    assert main(["plan", "yinyang_bptt", "--steps", "1000", "--batch", "32", "--budget", "2.5x"]) == 0
    assert "fits" in capsys.readouterr().out
    assert main(["plan", "yinyang_bptt", "--budget", "1.01x"]) == 1
    assert "over the budget" in capsys.readouterr().err


def test_neuro_train_ottt_model_runs(tmp_path, capsys):
    rc = main(["train", "yinyang_ottt", "--epochs", "1", "--max-train", "64", "--quiet",
               "--out", str(tmp_path / "o")])
    assert rc == 0
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert metrics["mode"] == "ottt" and 0.0 <= metrics["test_accuracy"] <= 1.0


def test_neuro_crosscheck_of_a_triplet_model_runs_and_bad_options_are_clear(tmp_path, capsys):
    """``neuro crosscheck`` on a triplet-STDP model (it used to crash) over a chosen duration; an
    option that does not apply to a local-rule model exits 2 with the reason."""
    out = tmp_path / "cc"
    assert main(["crosscheck", "triplet_stdp", "--out", str(out), "--duration", "1.0"]) == 0
    printed = capsys.readouterr().out
    assert "over 1 s PASSED" in printed and "spikes_equal" in printed
    assert json.loads((out / "fidelity.json").read_text())["settings"]["duration"] == 1.0
    assert main(["crosscheck", "triplet_stdp", "--format", "posit16"]) == 2
    assert "drop method (--method), storage (--format)" in capsys.readouterr().err
