"""Mode ``reversible`` (neuro.training.reversible): model-file validation, exact reconstruction, gradients
equal to ordinary autograd bit for bit, engine contributions equal to those gradients, `neuro train`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from neuro.model.spec import ModelFileError, load_model, loads_model
from neuro.sim.reversible_network import ReversibleNetwork, side_bytes_per_step
from neuro.training import train
from neuro.training.reversible import reversible_engine

MODEL = Path(__file__).resolve().parent.parent / "models" / "yinyang_reversible.toml"


@pytest.fixture(autouse=True)
def one_thread():
    """Many small float64 GEMMs: one intra-op thread is far faster on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_graph(hidden: int = 24, std: float = 1.5):
    text = MODEL.read_text().replace("size = 128", f"size = {hidden}")
    return loads_model(text.replace("std = 0.5", f"std = {std}"))


@pytest.mark.parametrize(
    "old,new,key",
    [
        ("size = 128", "size = 127", "populations.hidden.size"),
        ('tau_syn = "5 ms"\nv_th', 'tau_syn = "1.5 ms"\nv_th', "populations.hidden.tau_syn"),
        ("v_th = 1.0", "v_th = 0.1", "populations.hidden.v_th"),
        (
            'type = "LIF"',
            'type = "AdaptiveLIF"\ntau_adapt = "100 ms"\nadapt_increment = 0.1',
            "populations.hidden.type",
        ),
        ("blocks = 2", "blocks = 0", "reversible.blocks"),
        ('population = "hidden"', 'population = "readout"', "populations.readout.type"),
        ('rule = "bptt"', 'rule = "none"', "projections.input_hidden"),
    ],
)
def test_model_file_errors_name_the_key(old, new, key):
    text = MODEL.read_text()
    assert old in text
    with pytest.raises(ModelFileError) as err:
        loads_model(text.replace(old, new, 1))
    assert key in str(err.value)


def _inputs(graph, steps=10, batch=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(steps, batch, graph.inputs()[0].size, generator=g)
    return x, torch.arange(batch) % graph.populations[graph.output].size


def test_reconstruction_and_gradients_are_bit_exact():
    graph = small_graph()
    net = ReversibleNetwork(graph, seed=0)
    x, labels = _inputs(graph)
    # every state rebuilt by the backward equals the forward's, bit for bit
    wq = [w.detach() for w in net.quantized()]
    from neuro.sim.reversible import X_FRAC, quantize

    state, states, side = net.zero_state(x.shape[1]), [], []
    for t in range(x.shape[0]):
        states.append(state)
        state, _, aux = net.step(quantize(x[t].double(), X_FRAC), state, wq)
        side.append(net.records(aux))
    spikes = sum(int(r.v_spiked.numel()) for step in side for r in step[1:-1])
    assert spikes > 0, "no block spiked: the reset inversion would go untested"
    for t in reversed(range(x.shape[0])):
        state, _ = net.inverse(quantize(x[t].double(), X_FRAC), state, wq, side[t])
        assert all(torch.equal(a, b) for a, b in zip(state, states[t])), t
    # gradients of the streaming backward == ordinary autograd through every stored activation
    grads = []
    for reference in (False, True):
        leaves = [w.detach().double().requires_grad_() for w in net.weights.values()]
        scores = net.reference_scores(x, leaves) if reference else net.train_scores(x, leaves=leaves)
        torch.nn.functional.cross_entropy(scores, labels, reduction="sum").backward()
        grads.append([w.grad for w in leaves])
    for a, b in zip(*grads):
        assert a.abs().sum() > 0
        assert torch.equal(a, b)


def test_engine_receives_the_exact_gradient_and_side_bytes_match_the_formula():
    graph = small_graph()
    net = ReversibleNetwork(graph, seed=0)
    x, labels = _inputs(graph, steps=20)
    leaves = [w.detach().double().requires_grad_() for w in net.weights.values()]
    torch.nn.functional.cross_entropy(net.train_scores(x, leaves=leaves), labels, reduction="sum").backward()
    engine = reversible_engine(graph, net)
    scores = net.train_scores(x, engine, 1.0, chunk=3)  # 20 steps: 6 full chunks and a partial one
    torch.nn.functional.cross_entropy(scores, labels, reduction="sum").backward()
    for w, leaf in zip(net.weights.values(), leaves):
        # the engine rounds each error signal to bposit32 (~2**-24 relative) and sums the products exactly
        exact = engine.accumulated(w).reshape(w.shape)
        assert leaf.grad.abs().max() > 0
        torch.testing.assert_close(exact, leaf.grad, rtol=1e-6, atol=1e-6 * float(leaf.grad.abs().max()))
    zero = side_bytes_per_step(x.shape[1], net.sizes, 0) * x.shape[0]
    spikes = (net.last_side_bytes - zero) // 4
    assert net.last_side_bytes == zero + 4 * spikes and spikes > 0


def test_neuro_train_reversible_writes_metrics(tmp_path):
    from neuro.cli import main

    graph = load_model(MODEL)
    assert graph.reversible is not None
    out = tmp_path / "run"
    assert (
        main(["train", str(MODEL), "--epochs", "1", "--max-train", "64", "--quiet", "--out", str(out)]) == 0
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["mode"] == "reversible" and 0.0 <= metrics["test_accuracy"] <= 1.0
    assert (out / "weights.safetensors").exists() and "[reversible]" in (out / "model.toml").read_text()
    assert main(["train", str(MODEL), "--mode", "eprop", "--max-train", "8", "--quiet"]) == 2


@pytest.mark.slow
def test_reversible_training_learns_yinyang():
    """Two epochs on 960 samples (~40 s of CPU): the loss falls and test accuracy is well above chance
    (1/3; measured 0.49; the full 6-epoch run reaches 0.82)."""
    result = train(load_model(MODEL), epochs=2, max_train=960, progress=False)
    history = result.metrics["history"]
    assert history["loss"][1] < history["loss"][0] and result.metrics["test_accuracy"] > 0.42, history


def test_commands_that_run_the_plain_graph_refuse_a_reversible_model():
    """crosscheck, NIR export and serving would silently drop the blocks: they say so instead."""
    from neuro.crosscheck.fidelity import crosscheck
    from neuro.deploy.nir_io import export_nir, load_into_network
    g = load_model(Path(__file__).parent.parent / "models" / "yinyang_reversible.toml")
    for call in (lambda: crosscheck(g, None, duration=0.01, figure=False), lambda: export_nir(g, {}),
                 lambda: load_into_network(g, {})):
        with pytest.raises(ValueError, match=r"\[reversible\] section"):
            call()
