"""Certificates: issued only when every check passes; each failing check is named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from neuro import __version__
from neuro.deploy.certify import (
    CHECKS,
    CertificationError,
    certify,
    check_certificate,
    cli_certify,
    memory_plan,
    tensors_digest,
)
from neuro.model.spec import load_model, loads_model
from neuro.numerics import POSIT16

ROOT = Path(__file__).resolve().parent.parent
TINY = """
[model]
name = "tiny"
description = "certificate test model"
dt = "1 ms"
duration = "20 ms"
output = "out"

[populations.inp]
type = "input"
size = 3

[populations.hid]
type = "LIF"
size = 4
tau_mem = "{tau_mem}"
tau_syn = "5 ms"

[populations.out]
type = "LI"
size = 2
tau_mem = "10 ms"
tau_syn = "5 ms"

[inputs.inp]
encoding = "current"
gain = 1.0

[projections.a]
source = "inp"
target = "hid"
kind = "dense"
init = {{ dist = "normal", mean = 0.0, std = 0.5 }}
{extra_a}

[projections.b]
source = "hid"
target = "out"
kind = "dense"
init = {{ dist = "normal", mean = 0.0, std = 0.5 }}
{extra_b}
"""


def tiny(tau_mem: str = "10 ms", extra_a: str = "", extra_b: str = ""):
    return loads_model(TINY.format(tau_mem=tau_mem, extra_a=extra_a, extra_b=extra_b), "tiny.toml")


def weights_for(graph, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {n: torch.randn(graph.weight_shape(n), generator=gen) * 0.5 for n in graph.projections}


def test_certificate_issued_with_every_check():
    graph = load_model(ROOT / "models" / "yinyang_bptt.toml")
    w = weights_for(graph)
    cert = certify(graph, w)
    d = json.loads(cert.to_json())
    assert [c["name"] for c in d["checks"]] == list(CHECKS)
    assert all(c["passed"] for c in d["checks"])
    assert d["graph_hash"] == graph.canonical_hash()
    assert d["weights_sha256"] == tensors_digest(w)
    assert d["tool"] == "neuro" and d["tool_version"] == __version__
    assert d["memory_plan"]["source"] == "neuro.training.plan (inference)"
    assert check_certificate(d, graph, w).graph_hash == graph.canonical_hash()


def test_representable_names_the_format():
    graph = tiny().with_format("posit16")
    w = weights_for(graph)
    with pytest.raises(CertificationError) as err:
        certify(graph, w)
    assert err.value.check == "representable" and "posit16" in str(err.value)
    exact = {k: POSIT16.quantize(v.double()) for k, v in w.items()}
    assert certify(graph, exact).passed


def test_float32_representability():
    graph = tiny()
    w = {k: v.double() for k, v in weights_for(graph).items()}
    certify(graph, w)  # float32 values held in float64 tensors are fine
    w["a"][0, 0] += 1e-12
    with pytest.raises(CertificationError, match="representable.*1 of 12 weights are not float32"):
        certify(graph, w)


def test_bounds_and_sign():
    graph = tiny(extra_a='bounds = [-0.5, 0.5]', extra_b='sign = "excitatory"')
    w = weights_for(graph)
    w["a"] = w["a"].clamp(-0.5, 0.5)
    w["b"] = w["b"].abs()
    certify(graph, w)
    w["a"][1, 1] = 0.75
    with pytest.raises(CertificationError) as err:
        certify(graph, w)
    assert err.value.check == "bounds"
    w["a"][1, 1] = 0.0
    w["b"][0, 0] = -0.25
    with pytest.raises(CertificationError) as err:
        certify(graph, w)
    assert err.value.check == "sign" and "excitatory" in str(err.value)


def test_off_grade_component_is_refused():
    graph = tiny(extra_a="algebra = [3, 0, 0]\ngrades = [0, 2]")
    assert graph.weight_shape("a") == (4, 3, 4)  # packed: scalar + 3 bivector blades
    w = weights_for(graph)
    certify(graph, w)
    full = torch.zeros(4, 3, 8)  # full blade axis: grades 0 and 2 sit at blades 0 and 4..6 (Cl(3))
    from neuro.algebra import Algebra

    mask = Algebra(3).grade_mask([0, 2])
    full[..., mask] = 0.25
    w["a"] = full
    certify(graph, w)
    full[0, 0, 1] = 0.5  # a vector (grade 1) component
    with pytest.raises(CertificationError) as err:
        certify(graph, w)
    assert err.value.check == "grades" and "off-grade" in str(err.value)


def test_units_and_shapes_and_memory():
    graph = tiny(tau_mem="0.5 ms")  # shorter than dt: forward Euler overshoots
    with pytest.raises(CertificationError) as err:
        certify(graph, weights_for(graph))
    assert err.value.check == "units" and "tau_mem" in str(err.value)
    graph = tiny()
    w = weights_for(graph)
    w["a"] = torch.zeros(3, 4)
    with pytest.raises(CertificationError) as err:
        certify(graph, w)
    assert err.value.check == "shapes"
    plan = memory_plan(graph)
    assert plan["weights_bytes"] == (12 + 8) * 4
    with pytest.raises(CertificationError) as err:
        certify(graph, weights_for(graph), memory_budget=plan["total_bytes"] - 1)
    assert err.value.check == "memory"
    assert memory_plan(graph.with_format("posit8"))["weights_bytes"] == 20


def test_certificate_does_not_fit_other_weights():
    graph = tiny()
    cert = certify(graph, weights_for(graph, 0))
    with pytest.raises(CertificationError, match="weights_sha256"):
        check_certificate(cert.to_dict(), graph, weights_for(graph, 1))


def test_cli_certify(tmp_path, capsys):
    from safetensors.torch import save_file

    from neuro.model.spec import dump_model

    graph = tiny()
    (tmp_path / "m.toml").write_text(dump_model(graph))
    save_file(weights_for(graph), tmp_path / "w.safetensors")
    assert cli_certify(str(tmp_path / "m.toml"), str(tmp_path / "w.safetensors"),
                       out=str(tmp_path / "c.json")) == 0
    assert json.loads((tmp_path / "c.json").read_text())["graph_hash"] == graph.canonical_hash()
    (tmp_path / "m16.toml").write_text(dump_model(graph.with_format("posit16")))
    assert cli_certify(str(tmp_path / "m16.toml"), str(tmp_path / "w.safetensors")) == 1
    assert "representable" in capsys.readouterr().err


def write_tiny_run(out: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """A complete run folder of the tiny model, written by the one run writer."""
    from neuro.training.outputs import weights_digest, write_run

    graph = tiny()
    w = weights_for(graph, seed)
    write_run(out, graph, w, {"test_accuracy": 0.5, "weights_sha256": weights_digest(w)})
    return w


def test_certify_a_run_folder_through_its_manifest(tmp_path, capsys):
    from neuro.deploy.certify import certify_run
    from neuro.training.outputs import RunFolderError, read_run

    run = tmp_path / "run"
    w = write_tiny_run(run)
    assert certify_run(run).weights_sha256 == tensors_digest(w)
    assert cli_certify(str(run)) == 0 and '"graph_hash"' in capsys.readouterr().out
    metrics = run / "metrics.json"
    original = metrics.read_bytes()
    metrics.write_bytes(original.replace(b"0.5", b"0.9"))  # edited after the run finished
    with pytest.raises(RunFolderError, match="metrics.json: does not match its sha256 in manifest.json"):
        read_run(run)
    metrics.write_bytes(original)
    (run / "manifest.json").unlink()  # what a killed run leaves
    with pytest.raises(RunFolderError, match="the run is incomplete: it has no manifest.json"):
        certify_run(run)
    assert cli_certify(str(run)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "incomplete" in err and "Traceback" not in err
    assert cli_certify(str(tmp_path / "nowhere")) == 2
    assert "give a model file and its weights, or a run folder" in capsys.readouterr().err
