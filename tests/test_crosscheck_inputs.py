"""``neuro crosscheck`` with a user's raster (``--inputs FILE``), a trained run folder (``RUN_DIR``),
a silent run, and Diehl & Cook's lateral inhibition through our closed loop."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from neuro.cli import main
from neuro.crosscheck.fidelity import crosscheck
from neuro.crosscheck.inputs import make_inputs
from neuro.crosscheck.local import crosscheck_local
from neuro.model.spec import load_model

ROOT = Path(__file__).parent.parent
STEPS = 500  # crosscheck_ff over 50 ms at dt = 0.1 ms


def _model(name: str, duration: float | None = None):
    g = load_model(ROOT / "models" / f"{name}.toml")
    return g if duration is None else dataclasses.replace(g, duration=duration)


def _ff_raster(seed: int | None = None) -> torch.Tensor:
    """crosscheck_ff's own seeded inputs over 50 ms (default: its training seed, as the cross-check
    draws them), ``(T, 1, 200)`` float64 0/1."""
    g = _model("crosscheck_ff", 0.05)
    return make_inputs(g, g.training.seed if seed is None else seed)["inputs"]


def _check(args: list[str], capsys) -> tuple[int, str, str]:
    rc = main(["crosscheck", *args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return rc, captured.out, captured.err


def _report(folder: Path) -> dict:
    return json.loads((folder / "fidelity.json").read_text())


# ---------------------------------------------------------------------------------------------------
# --inputs FILE: good files


def test_inputs_file_drives_both_simulators(tmp_path, capsys):
    """The file's raster is what both sides see: the model's own seeded raster written to a file
    gives the seeded run's figures; other rasters (another seed, two trials in a .safetensors file,
    a file with several arrays) pass with their own."""
    seeded = tmp_path / "seeded"
    assert _check(["crosscheck_ff", "--duration", "0.05", "--out", str(seeded)], capsys)[0] == 0
    x = _ff_raster()
    np.savez(tmp_path / "one.npz", anything=x[:, 0].numpy().astype(np.uint8))  # (T, n), any name
    rc, out, _ = _check(["crosscheck_ff", "--duration", "0.05", "--inputs", str(tmp_path / "one.npz"),
                         "--out", str(tmp_path / "one")], capsys)
    assert rc == 0 and "PASSED" in out
    one = _report(tmp_path / "one")
    assert one["n_spikes_ours"] == _report(seeded)["n_spikes_ours"] > 0
    assert one["settings"]["inputs"] == str(tmp_path / "one.npz")

    two = torch.cat([x, _ff_raster(seed=12345)], dim=1).bool()  # (T, 2, n): two trials
    save_file({"spikes": two}, tmp_path / "two.safetensors")
    np.savez(tmp_path / "keyed.npz", labels=np.arange(3), spikes=two[:, 1].numpy())
    for name in ("two.safetensors", "keyed.npz"):
        assert _check(["crosscheck_ff", "--duration", "0.05", "--inputs", str(tmp_path / name),
                       "--out", str(tmp_path / name[:5])], capsys)[0] == 0
    assert _report(tmp_path / "two.s")["n_spikes_ref"] > one["n_spikes_ref"]  # both trials ran
    assert _report(tmp_path / "keyed")["n_spikes_ours"] != one["n_spikes_ours"]  # trial 2, not 1


def test_inputs_file_of_currents_for_a_current_encoded_model(tmp_path, capsys):
    """yinyang_bptt's input is current-encoded (40 steps of 4 channels): a raster of real values."""
    gen = torch.Generator().manual_seed(1)
    currents = 3.0 * torch.rand(40, 3, 4, generator=gen, dtype=torch.float64)
    np.savez(tmp_path / "currents.npz", inputs=currents.numpy())
    rc, out, _ = _check(["yinyang_bptt", "--inputs", str(tmp_path / "currents.npz"),
                         "--out", str(tmp_path / "cc")], capsys)
    assert rc == 0 and "PASSED" in out
    report = _report(tmp_path / "cc")
    assert report["match_0"] == 1.0 and report["n_spikes_ours"] > 0 and report["max_abs_dv"] <= 1e-12


# ---------------------------------------------------------------------------------------------------
# --inputs FILE: every bad file is exit 2 with the file, the shape and the fix


def _write(path: Path, content) -> None:
    if callable(content):
        content(path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        np.savez(path, **content)


_X = _ff_raster()[:, 0].numpy()  # (500, 200)
BAD_FILES = {
    "missing": ("gone.npz", None, ["no such file"]),
    "suffix": ("raster.csv", b"0,1\n", ["expected a .npz or .safetensors file", "'.csv'"]),
    "corrupt_npz": ("raster.npz", b"not a zip file", ["not a readable .npz file", "numpy.savez"]),
    "corrupt_safetensors": ("raster.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{", [
        "not a readable .safetensors file", "save_file"]),
    "strings": ("raster.npz", {"spikes": np.array(["a", "b"])}, ["holds <U1 values", "holds numbers"]),
    "empty": ("raster.npz", {}, ["holds no array", "'spikes'"]),
    "ambiguous": ("raster.npz", {"a": _X, "b": _X}, ["holds arrays ['a', 'b']", "under the name 'spikes'"]),
    "rank": ("raster.npz", {"spikes": _X[:, 0]}, ["shape (500,)", "(T, 200) or (T, B, 200)"]),
    "channels": ("raster.npz", {"spikes": _X[:, :199]}, ["shape (500, 199)", "(T, 200) or (T, B, 200)"]),
    "transposed_long": ("raster.npz", {"spikes": _X.T.copy()}, ["shape (200, 500)", "transpose it"]),
    "values": ("raster.npz", {"spikes": _X * 0.5}, ["takes 0/1 spikes, found 0.5", "rand < rate * dt"]),
    "nan": ("raster.npz", {"spikes": np.where(_X > 0, np.nan, 0.0)}, ["NaN or infinite"]),
    "steps": ("raster.npz", {"spikes": _X[:400]}, ["shape (400, 200)", "has 400 steps", "runs 500 steps",
                                                  "0.04 s (--duration)"]),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_inputs_file_is_exit_2_with_the_file_the_shape_and_the_fix(case, tmp_path, capsys):
    name, content, expected = BAD_FILES[case]
    path = tmp_path / name
    if content is not None:
        _write(path, content)
    rc, _, err = _check(["crosscheck_ff", "--duration", "0.05", "--inputs", str(path),
                         "--out", str(tmp_path / "out")], capsys)
    assert rc == 2, err
    assert str(path) in err
    for text in expected:
        assert text in err, (text, err)
    assert not (tmp_path / "out").exists()  # nothing ran


def test_local_model_takes_one_trial(tmp_path, capsys):
    x = torch.zeros(20, 2, 200, dtype=torch.bool)
    save_file({"spikes": x}, tmp_path / "two.safetensors")
    rc, _, err = _check(["triplet_stdp", "--duration", "0.01", "--inputs", str(tmp_path / "two.safetensors")],
                        capsys)
    assert rc == 2 and "shape (20, 2, 200)" in err and "(T, 1, 200)" in err and "local-rule" in err


# ---------------------------------------------------------------------------------------------------
# a silent run compares nothing: it fails


def test_silent_run_fails_saying_nothing_was_compared(tmp_path, capsys):
    np.savez(tmp_path / "zeros.npz", spikes=np.zeros((STEPS, 200), dtype=np.uint8))
    rc, out, err = _check(["crosscheck_ff", "--duration", "0.05", "--inputs", str(tmp_path / "zeros.npz"),
                           "--out", str(tmp_path / "silent")], capsys)
    assert rc == 1 and "FAILED (spikes)" in out
    assert "nothing was compared" in err and "neither simulator spiked" in err
    report = _report(tmp_path / "silent")
    assert report["passed"] is False and report["checks"]["spikes"]["ok"] is False
    assert report["match_0"] == 1.0 and report["checks"]["gamma_window"]["ok"]  # vacuously perfect
    # a local-rule model too: no spike in, no spike out, no learning
    song = _model("song2000_stdp")
    r = crosscheck(song, None, duration=0.02, inputs=torch.zeros(200, 1000), figure=False)
    assert not r["passed"] and not r["checks"]["spikes"]["ok"] and not r["checks"]["weights_changed"]["ok"]


# ---------------------------------------------------------------------------------------------------
# RUN_DIR: a folder written by `neuro train` is checked with its trained weights


def test_run_folder_of_a_fixed_weight_model_uses_its_weights(tmp_path, capsys):
    from neuro.sim.network import Network
    from neuro.training.outputs import weights_digest, write_run

    graph = _model("crosscheck_ff")
    weights = {k: (w.detach() * 1.5).contiguous() for k, w in Network(graph, seed=0).weights.items()}
    run = tmp_path / "ff_run"
    write_run(run, graph, weights, {"weights_sha256": weights_digest(weights)})
    rc, out, _ = _check([str(run), "--duration", "0.05"], capsys)
    assert rc == 0 and f"run {run}" in out
    report = _report(tmp_path / "ff_run_crosscheck")  # default: next to the run folder
    assert report["settings"]["weights"] == "given" and report["passed"]
    api = crosscheck(_model("crosscheck_ff", 0.05), None, weights=weights, figure=False)
    seeded = crosscheck(_model("crosscheck_ff", 0.05), None, figure=False)
    assert report["n_spikes_ours"] == api["n_spikes_ours"] != seeded["n_spikes_ours"]


def test_run_folder_of_a_trained_stdp_model(tmp_path, capsys):
    """``neuro train song2000_stdp`` for 0.2 s, then ``neuro crosscheck RUN_DIR``: the closed loop and
    Brian2 start from the trained weights and the run's resolved model (its 0.2 s)."""
    from neuro.training.outputs import load_run

    run = tmp_path / "song"
    assert main(["train", "song2000_stdp", "--duration", "0.2", "--out", str(run), "--quiet"]) == 0
    out = tmp_path / "check"
    rc, printed, _ = _check([str(run), "--duration", "0.1", "--out", str(out)], capsys)
    assert rc == 0 and "PASSED" in printed
    report = _report(out)
    assert report["settings"]["weights"] == "given" and report["spikes_equal"]
    trained = load_run(run)
    rec = crosscheck_local(trained.graph, duration=0.1, weights=dict(trained.network.weights),
                           record=True)
    assert torch.equal(rec["record"]["w0"], trained.network.weights["synapses"].detach().double())
    assert report["max_weight_change"] == rec["max_weight_change"]
    seeded = crosscheck_local(trained.graph, duration=0.1)
    assert seeded["max_weight_change"] != rec["max_weight_change"]


def test_folder_that_is_not_a_finished_run_is_exit_2(tmp_path, capsys):
    (tmp_path / "half").mkdir()
    rc, _, err = _check([str(tmp_path / "half")], capsys)
    assert rc == 2 and "not a `neuro train` output folder" in err
    (tmp_path / "half" / "metrics.json").write_text("{}")  # a run killed before its manifest
    rc, _, err = _check([str(tmp_path / "half")], capsys)
    assert rc == 2 and "the run is incomplete" in err


# ---------------------------------------------------------------------------------------------------
# Diehl & Cook: the closed loop with lateral inhibition


@pytest.mark.parametrize("lateral_self", [False, True])
def test_diehl_cook_with_lateral_inhibition_matches_brian2(lateral_self):
    """Every projection's weights go to Brian2, the fixed inhibition too (without its diagonal when
    ``lateral_self = false``, as the loop runs it); the inhibition is active: without it both
    simulators spike more."""
    from neuro.sim.network import Network

    g = _model("diehl_cook_digits")
    g = dataclasses.replace(g, data=dataclasses.replace(g.data, options={**g.data.options,
                                                                         "lateral_self": lateral_self}))
    r = crosscheck(g, None, duration=0.3, figure=False)
    assert r["passed"] and r["spikes_equal"] and r["n_spikes_ref"] > 10, r
    assert r["max_abs_dw"] <= 1e-9 and r["compared_share"] > 0.9 and r["max_weight_change"] > 1e-2, r
    weights = dict(Network(g, seed=g.training.seed).weights)
    free = crosscheck_local(g, duration=0.3, weights={**weights, "inhibition": torch.zeros(100, 100)})
    assert free["spikes_equal"] and free["n_spikes_ref"] > 2 * r["n_spikes_ref"], (free, r)
