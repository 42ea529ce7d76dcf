"""NIR exchange: correct time constants, identical spikes after a round trip, Norse/snnTorch import."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from neuro.deploy.nir_io import NIRError, export_nir, import_nir, load_into_network, read_nir, write_nir
from neuro.model.spec import load_model, loads_model
from neuro.sim.network import Network

ROOT = Path(__file__).resolve().parent.parent
MIXED = """
[model]
name = "nir_mixed"
description = "LIF with recurrence and a delay, LIFBox, LI readout"
dt = "1 ms"
duration = "60 ms"
output = "readout"

[populations.inp]
type = "input"
size = 6

[populations.hid]
type = "LIF"
size = 24
tau_mem = "12 ms"
tau_syn = "4 ms"
v_th = 0.8
v_reset = -0.1
v_leak = 0.05

[populations.box]
type = "LIFBox"
size = 10
tau_mem = "7 ms"

[populations.readout]
type = "LI"
size = 3
tau_mem = "20 ms"
tau_syn = "6 ms"

[inputs.inp]
encoding = "poisson"
max_rate = "150 Hz"

[projections.inp_hid]
source = "inp"
target = "hid"
kind = "dense"
delay = "2 ms"
init = { dist = "normal", mean = 0.4, std = 0.6 }

[projections.hid_hid]
source = "hid"
target = "hid"
kind = "recurrent"
init = { dist = "normal", mean = 0.0, std = 0.2 }

[projections.hid_box]
source = "hid"
target = "box"
kind = "dense"
init = { dist = "normal", mean = 0.3, std = 0.5 }
bounds = [-1.0, 2.0]

[projections.box_readout]
source = "box"
target = "readout"
kind = "dense"
init = { dist = "normal", mean = 0.0, std = 0.5 }
"""


def _run(net, x):
    with torch.no_grad():
        return net(x)


@pytest.mark.parametrize("model", ["mixed", "yinyang_bptt"])
def test_round_trip_identical_graph_and_spikes(tmp_path, model):
    if model == "mixed":
        graph = loads_model(MIXED, "mixed.toml")
    else:
        graph = load_model(ROOT / "models" / f"{model}.toml")
    net = Network(graph, seed=3)
    weights = {k: v.detach().clone() for k, v in net.weights.items()}
    path = write_nir(graph, weights, tmp_path / "m.nir")
    g2, w2 = read_nir(path)
    assert g2 == graph  # same canonical hash: populations, projections, delays, encodings, training
    assert all(torch.equal(weights[k], w2[k]) for k in weights)
    x = (torch.rand(graph.steps, 7, graph.inputs()[0].size, generator=torch.Generator().manual_seed(1)) < 0.3)
    a, b = _run(net, x.float()), _run(load_into_network(g2, w2), x.float())
    assert torch.equal(a.readout, b.readout)
    for k in a.spikes:
        assert torch.equal(a.spikes[k], b.spikes[k])
    assert sum(float(s.sum()) for k, s in a.spikes.items() if k != graph.inputs()[0].name) > 0


def test_time_constants_in_seconds():
    graph = loads_model(MIXED, "mixed.toml")
    nir_graph = export_nir(graph, {k: v.detach() for k, v in Network(graph).weights.items()})
    hid = nir_graph.nodes["hid"]
    assert np.all(hid.tau_mem == 0.012) and np.all(hid.tau_syn == 0.004)  # not dt * tau
    assert np.all(nir_graph.nodes["box"].tau == 0.007)
    assert np.all(nir_graph.nodes["inp_hid_delay"].delay == 0.002)
    assert ("hid", "hid_hid") in nir_graph.edges and ("hid_hid", "hid") in nir_graph.edges


def test_unsupported_populations_are_refused():
    graph = load_model(ROOT / "models" / "crosscheck_ff.toml")  # has a refractory period
    with pytest.raises(NIRError, match="refractory"):
        export_nir(graph, {k: v.detach() for k, v in Network(graph).weights.items()})


def _norse_model():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import norse.torch as norse
    torch.manual_seed(0)
    model = norse.SequentialState(
        torch.nn.Linear(5, 30, bias=False), norse.LIFCell(),
        torch.nn.Linear(30, 4, bias=False), norse.LIFCell(),
    )
    with torch.no_grad():
        model[0].weight.mul_(6.0)
        model[2].weight.mul_(6.0)
    return model


def test_norse_export_loads_with_fixed_time_constants():
    """Norse 1.1.0's ``to_nir`` writes tau = dt * tau (1e-5 s for 10 ms); we fix it explicitly and the
    imported model spikes exactly like the Norse module."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from norse.torch.utils.export_nir import to_nir
    model = _norse_model()
    nir_graph = to_nir(model, torch.zeros(1, 5))
    lif = next(n for n in nir_graph.nodes.values() if type(n).__name__ == "CubaLIF")
    assert float(lif.tau_mem) == pytest.approx(1e-5)  # the bug, as Norse writes it
    graph, weights = import_nir(nir_graph, dt=1e-3, producer="norse")
    hidden = [p for p in graph.populations.values() if p.type == "LIF"]
    assert [p.tau_mem for p in hidden] == [0.01, 0.01] and [p.tau_syn for p in hidden] == [0.005, 0.005]
    with pytest.warns(UserWarning, match="Norse"):
        auto, _ = import_nir(nir_graph, dt=1e-3)  # auto-detected
    assert auto == graph
    x = (torch.rand(80, 6, 5, generator=torch.Generator().manual_seed(2)) < 0.3).float()
    with torch.no_grad():
        z, state, zs = None, None, []
        for t in range(x.shape[0]):
            z, state = model(x[t], state)
            zs.append(z)
        reference = torch.stack(zs)
        ours = load_into_network(graph, weights)(x)
    assert reference.sum() > 0
    assert torch.equal(ours.readout, reference)


def test_norse_without_fix_is_different():
    """Reading Norse's numbers as seconds (producer='other') gives a 1000x faster, wrong model."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from norse.torch.utils.export_nir import to_nir
    nir_graph = to_nir(_norse_model(), torch.zeros(1, 5))
    graph, _ = import_nir(nir_graph, dt=1e-8, producer="other")
    assert next(p for p in graph.populations.values() if p.type == "LIF").tau_mem == pytest.approx(1e-5)


def test_import_errors_are_clear():
    import nir

    nodes = {"i": nir.Input({"input": np.array([2])}), "a": nir.Affine(np.ones((2, 2)), np.ones(2)),
             "l": nir.LI(np.full(2, 0.01), np.ones(2), np.zeros(2)),
             "o": nir.Output({"output": np.array([2])})}
    g = nir.NIRGraph(nodes=nodes, edges=[("i", "a"), ("a", "l"), ("l", "o")])
    with pytest.raises(NIRError, match="bias"):
        import_nir(g, dt=1e-3)
    with pytest.raises(NIRError, match="time step"):
        import_nir(g)


def test_cli_export_of_a_run_folder_needs_a_complete_run(tmp_path, capsys):
    from neuro.deploy.nir_io import cli_export_nir
    from neuro.training.outputs import weights_digest, write_run

    graph = load_model(ROOT / "models" / "yinyang_bptt.toml")
    net = Network(graph, seed=3)
    weights = {k: v.detach().clone() for k, v in net.weights.items()}
    write_run(tmp_path / "run", graph, weights, {"weights_sha256": weights_digest(weights)})
    assert cli_export_nir(str(tmp_path / "run"), str(tmp_path / "m.nir")) == 0
    g_back, w_back = read_nir(tmp_path / "m.nir")
    assert g_back == graph and all(torch.equal(w_back[k], weights[k]) for k in weights)
    (tmp_path / "run" / "manifest.json").unlink()
    assert cli_export_nir(str(tmp_path / "run"), str(tmp_path / "again.nir")) == 2
    assert "the run is incomplete" in capsys.readouterr().err and not (tmp_path / "again.nir").exists()

@pytest.mark.skipif(importlib.util.find_spec("snntorch") is None, reason="snnTorch is not installed")
def test_snntorch_export_loads():  # pragma: no cover - runs only where snnTorch is installed
    import snntorch as snn
    from snntorch.export_nir import export_to_nir

    net = torch.nn.Sequential(torch.nn.Linear(4, 8, bias=False), snn.Leaky(beta=0.9, init_hidden=True,
                                                                          output=True))
    graph, weights = import_nir(export_to_nir(net, torch.zeros(1, 4)), dt=1e-3, producer="snntorch")
    assert set(weights) and graph.populations
