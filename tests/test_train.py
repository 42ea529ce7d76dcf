"""Training through the engine: BPTT factors equal autograd, same seed = same bits, 1 worker = 2 workers.

The two-worker run uses torch.distributed (gloo on 127.0.0.1, a free port) started with
torch.multiprocessing; each worker calls :func:`neuro.training` on its share of the microbatches.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from neuro.engine import ParamType, UpdateEngine
from neuro.model.spec import load_model, loads_model
from neuro.numerics import BPOSIT32, POSIT32
from neuro.rules.bptt import bptt_contribute, classification_loss, readout_scores
from neuro.sim.network import Network
from neuro.training import train

F64 = torch.float64
MODELS = os.path.join(os.path.dirname(__file__), "..", "models")

SMALL = """
[model]
name = "small"
dt = "1 ms"
duration = "25 ms"
output = "out"
format = "float64"

[populations.inp]
type = "input"
size = 4

[populations.hid]
type = "LIF"
size = 16
tau_mem = "10 ms"
tau_syn = "5 ms"
surrogate = "superspike"
surrogate_scale = 10.0

[populations.out]
type = "LI"
size = 3
tau_mem = "10 ms"
tau_syn = "5 ms"

[inputs.inp]
encoding = "current"

[projections.inp_hid]
source = "inp"
target = "hid"
init = { dist = "normal", mean = 0.3, std = 0.5 }
rule = "bptt"

[projections.hid_hid]
source = "hid"
target = "hid"
kind = "recurrent"
init = { dist = "normal", mean = 0.0, std = 0.3 }
rule = "bptt"

[projections.hid_out]
source = "hid"
target = "out"
init = { dist = "normal", mean = 0.0, std = 0.5 }
rule = "bptt"

[data]
name = "yinyang"

[training]
batch_size = 16
microbatch = 8
seed = 3
learning_rate = 2e-3
"""


def _yinyang_batch(n: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(n, 2, generator=g, dtype=F64)
    x = torch.cat([xy, 1 - xy], 1)
    return x.unsqueeze(0).expand(25, n, 4).clone() * 2.0, torch.randint(0, 3, (n,), generator=g)


@pytest.mark.parametrize("fmt", [POSIT32, BPOSIT32], ids=["posit32", "bposit32"])
def test_bptt_through_engine_equals_autograd(fmt):
    """The engine's exact sum of the handed-over factors is autograd's W.grad (float64)."""
    graph = loads_model(SMALL)
    net = Network(graph, dtype=F64)
    x, labels = _yinyang_batch()
    names = list(net.weights)

    r = net(x)  # autograd's own reduction
    classification_loss(readout_scores(r.readout), labels).backward()
    grads = {n: net.weights[n].grad.clone() for n in names}
    net.zero_grad(set_to_none=True)

    r = net(x, track=True)  # the rule's factors
    classification_loss(readout_scores(r.readout), labels).backward()
    assert all(net.weights[n].grad is None for n in names)
    engine = UpdateEngine([{"params": [net.weights[n]], "names": [n]} for n in names], format=fmt, lr=1.0,
                          type=ParamType(storage="float64"))
    bptt_contribute(engine, net, r, names, -1.0, {"hid_hid", "hid_out"})
    factors = {}
    for n in names:
        c = r.currents[n]
        delta = (c.grad if isinstance(c, torch.Tensor) else torch.stack([ci.grad for ci in c]))
        factors[n] = (delta.reshape(-1, delta.shape[-1]), r.pre[n].reshape(-1, r.pre[n].shape[-1]))
    with torch.no_grad():
        for w in net.weights.values():
            w.zero_()  # the step then writes the exact sum, rounded once to float64
    engine.step()
    for n in names:
        update = -net.weights[n].detach()  # = sum_k delta_k pre_k^T, as the quire summed it
        d, p = factors[n]
        qd, qp = fmt.quantize(d), fmt.quantize(p)
        exact = qd.T @ qp  # products of posit32 values are exact in float64; the sum is nearly exact
        size = qd.abs().T @ qp.abs()
        assert float(size.max()) > 0
        assert bool(((update - exact).abs() <= 1e-12 * size + 1e-300).all()), n
        # versus autograd: the only difference is rounding each factor to the quire's format
        bound = qd.abs().T @ (qp - p).abs() + (qd - d).abs().T @ p.abs()
        diff = (update - grads[n]).abs()
        assert bool((diff <= bound * (1 + 1e-9) + 1e-12 * size).all()), n
        rel = float(diff.max() / grads[n].abs().max())
        assert rel < (1e-7 if fmt is POSIT32 else 1e-5), (n, rel)
        assert float((update - grads[n]).abs().max()) < 1e-3 * float(grads[n].abs().max())
    # the test can fail: a one-step misalignment of the factors would be far off
    d, p = factors["hid_hid"]
    shifted = d[8:].T @ p[:-8]
    assert float((shifted + net.weights["hid_hid"].detach()).abs().max()) > 1e-3 * float(
        grads["hid_hid"].abs().max())


def _graph(fmt: str = "float32"):
    g = load_model(os.path.join(MODELS, "yinyang_bptt.toml"))
    return g.with_training(batch_size=16, microbatch=8).with_format(fmt)


def test_same_seed_same_bits_other_seed_other_bits():
    a = train(_graph(), epochs=1, progress=False, max_train=32)
    b = train(_graph(), epochs=1, progress=False, max_train=32)
    c = train(_graph(), epochs=1, progress=False, max_train=32, seed=5)
    assert a.metrics["weights_sha256"] == b.metrics["weights_sha256"]
    assert a.metrics["weights_sha256"] != c.metrics["weights_sha256"]
    for key in ("test_accuracy", "train_accuracy", "epochs", "seconds", "format"):
        assert key in a.metrics
    assert a.metrics["format"] == ["float32"] and a.metrics["epochs"] == 1
    fresh = Network(_graph(), seed=a.metrics["seed"])
    trained = a.network.weights["input_hidden"].detach()
    assert not torch.equal(fresh.weights["input_hidden"].detach(), trained)  # the run changed weights


def _worker(rank: int, world: int, port: int, path: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        out = {}
        for fmt in ("float32", "posit8"):
            result = train(_graph(fmt), epochs=1, progress=False, max_train=32)
            out[fmt] = result.metrics["weights_sha256"]
            assert result.metrics["workers"] == world
        with open(f"{path}.{rank}", "w") as f:
            json.dump(out, f)
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_one_worker_and_two_gloo_workers_give_the_same_bits():
    """A global batch of 16 = 2 microbatches on 1 worker, or 1 + 1 on 2 workers: same weights."""
    single = {fmt: train(_graph(fmt), epochs=1, progress=False, max_train=32).metrics["weights_sha256"]
              for fmt in ("float32", "posit8")}
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "digest")
        method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
        mp.start_processes(_worker, args=(2, _free_port(), path), nprocs=2, join=True, start_method=method)
        ranks = [json.load(open(f"{path}.{r}")) for r in range(2)]
    assert ranks[0] == ranks[1] == single
    assert single["float32"] != single["posit8"]


def test_plain_float32_gradients_depend_on_the_split():
    """Without the quire, the same 16 samples as 1 x 16 or 2 x 8 give different float32 bits."""
    graph = _graph()
    net = Network(graph)
    from neuro.training.data import load_split

    data = load_split(graph, "train")
    idx = torch.arange(16)
    x = data.encode(idx, 0)
    labels = data.labels[idx]

    def grad(parts):
        net.zero_grad(set_to_none=True)
        for part in parts:
            r = net(x[:, part])
            classification_loss(readout_scores(r.readout), labels[part]).backward()
        return net.weights["input_hidden"].grad.clone()

    whole, halves = grad([idx]), grad([idx[:8], idx[8:]])
    torch.testing.assert_close(whole, halves, rtol=1e-4, atol=1e-6)  # same maths ...
    assert not torch.equal(whole, halves)  # ... different bits


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_training_runs_and_is_reproducible():
    """On a GPU a tiny run trains, and two runs with the same seed give identical weight bits
    (float kernels differ from the CPU's, so weights are not compared across devices)."""
    from neuro.model.spec import load_model
    from neuro.training import train

    graph = load_model(os.path.join(os.path.dirname(__file__), "..", "models", "digits_bptt.toml"))
    result = train(graph, epochs=1, max_train=64, progress=False, device="cuda")
    assert result.network.device.type == "cuda"
    assert 0.0 <= result.metrics["test_accuracy"] <= 1.0
    again = train(graph, epochs=1, max_train=64, progress=False, device="cuda")
    assert again.metrics["weights_sha256"] == result.metrics["weights_sha256"]
