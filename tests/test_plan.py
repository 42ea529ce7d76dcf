"""neuro.training.plan: hand-computed plan, budget check and CLI entry, measured peak within 10% of the
plan."""

from __future__ import annotations

import json

import pytest
import torch

from neuro.model.spec import loads_model
from neuro.rules.online import OnlineLearner
from neuro.sim.checkpointed import CheckpointedBPTT
from neuro.sim.network import Network
from neuro.training.bptt import loss_trained
from neuro.training.engines import build_engine, preallocate_quires
from neuro.training.plan import (
    ACCUMULATE_OUTER_PER_WEIGHT,
    ENGINE_WORKSPACE_PER_WEIGHT,
    QUIRE_LIMBS,
    TensorBytes,
    all_plans,
    memory_plan,
    parse_budget,
    pick_mode,
    plan_main,
    reversible_side_bytes,
)


def model_text(n: int = 10, n_in: int = 4, hidden_type: str = "LIF", recurrent: bool = False,
               rule: str = "eprop") -> str:
    extra = 'tau_adapt = "100 ms"\nadapt_increment = 0.2' if hidden_type == "AdaptiveLIF" else ""
    rec = f"""
[projections.h_h]
source = "h"
target = "h"
kind = "recurrent"
init = {{ dist = "normal", mean = 0.0, std = 0.05 }}
rule = "{rule}"
""" if recurrent else ""
    return f"""
[model]
name = "small"
dt = "1 ms"
duration = "20 ms"
output = "out"

[populations.inp]
type = "input"
size = {n_in}

[populations.h]
type = "{hidden_type}"
size = {n}
{extra}

[populations.out]
type = "LI"
size = 3

[inputs.inp]
encoding = "current"

[projections.in_h]
source = "inp"
target = "h"
init = {{ dist = "normal", mean = 0.0, std = 0.5 }}
rule = "{rule}"

[projections.h_out]
source = "h"
target = "out"
init = {{ dist = "normal", mean = 0.0, std = 0.3 }}
rule = "{rule}"
{rec}
[training]
microbatch = 2
batch_size = 2
"""


def test_plan_matches_hand_computation():
    g = loads_model(model_text())
    p = memory_plan(g, batch=2, steps=5, mode="eprop", chunk=8)
    numel = 10 * 4 + 3 * 10
    # float32 everywhere: 4 bytes
    assert p.inference == {
        "weights": numel * 4,
        "weight_tensors": 0,
        "neuron_states": 2 * 10 * 3 * 4 + 2 * 3 * 3 * 4,  # v, i, out of 10 LIF and 3 LI
        "readout": 2 * 3 * 4,
        "input_buffer": 5 * 2 * 4 * 4,
        "step_workspace": 8 * 2 * (10 + 3) * 4,
    }
    # ei, ev (B, N) per projection; e-prop's filtered traces (B, N) x 2 into the hidden layer and
    # filtered pseudo-derivatives (B, n) x 2 of the hidden layer
    assert p.training["eligibility_traces"] == 2 * 2 * 4 * 4 + 2 * 2 * 10 * 4 + 2 * 2 * 4 * 4 + 2 * 2 * 10 * 4
    # max-membrane class snapshots (B, K, N) per trained projection, (B, K, M) into the hidden layer
    assert p.training["signal_buffers"] == 2 * 3 * (4 + 10) * 4 + 2 * 3 * 10 * 4
    assert p.training["step_workspace"] == p.inference["step_workspace"] + 2 * 3 * 10 * 4  # (B, K, n)
    assert p.training["quires"] == numel * (8 * QUIRE_LIMBS + 1)
    assert p.training["optimizer"] == 2 * numel * 8
    assert p.training["engine_workspace"] == 10 * 4 * ENGINE_WORKSPACE_PER_WEIGHT
    assert p.training["outer_workspace"] == 10 * 4 * ACCUMULATE_OUTER_PER_WEIGHT  # largest trained weight
    phases = ("step_workspace", "engine_workspace", "outer_workspace")
    persistent = sum(v for k, v in p.training.items() if k not in phases)
    forward = p.training["step_workspace"] + p.training["outer_workspace"]
    assert p.training_bytes == persistent + max(forward, p.training["engine_workspace"])
    assert p.ratio == pytest.approx(p.training_bytes / p.inference_bytes)
    # posit8 storage: 1 byte per weight, the float32 tensors holding them are reported apart
    p8 = memory_plan(g.with_format("posit8"), batch=2, steps=5)
    assert p8.inference["weights"] == numel and p8.inference["weight_tensors"] == 3 * numel


def test_online_memory_is_flat_in_t_and_bptt_grows():
    g = loads_model(model_text(n=64))
    short, long = (memory_plan(g, batch=8, steps=t, mode="eprop") for t in (100, 1000))
    assert long.training_bytes - short.training_bytes == long.inference_bytes - short.inference_bytes
    b_short, b_long = (memory_plan(g, batch=8, steps=t, mode="bptt") for t in (100, 1000))
    assert b_long.training["saved_activations"] == 10 * b_short.training["saved_activations"]
    ck = memory_plan(g, batch=8, steps=1000, mode="bptt_checkpoint")
    assert ck.segment == 32 and ck.training["saved_activations"] < b_long.training["saved_activations"] / 10


def test_budget_parsing_and_pick_mode():
    assert parse_budget("2x") == ("ratio", 2.0)
    assert parse_budget("1 MiB") == ("bytes", 2.0**20)
    with pytest.raises(ValueError):
        parse_budget("two")
    g = loads_model(model_text(n=64))
    assert pick_mode(g, "1000x", batch=8, steps=1000).mode == "bptt"
    picked = pick_mode(g, "50x", batch=8, steps=1000)
    assert picked is not None and picked.mode != "bptt" and picked.ratio <= 50
    assert pick_mode(g, "1.01x", batch=8, steps=1000) is None


def test_plan_main_json_and_budget_failure(tmp_path, capsys):
    path = tmp_path / "m.toml"
    path.write_text(model_text(n=64))
    assert plan_main(str(path), batch=8, steps=100, mode="eprop", as_json=True) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("inference_bytes", "training_bytes", "ratio", "mode", "components"):
        assert key in out
    assert out["mode"] == "eprop" and set(out["plans"]) >= {"bptt", "eprop", "ottt"}
    assert plan_main(str(path), batch=8, steps=1000, mode="bptt", budget="50x") == 1
    err = capsys.readouterr().err
    assert "saved_activations" in err and "fits" in err and "bptt" in err
    assert plan_main(str(path), batch=8, steps=100) == 0
    assert "ratio" in capsys.readouterr().out
    assert plan_main(str(tmp_path / "missing.toml")) == 2


def _measure(g, mode: str, steps: int, batch: int = 8) -> int:
    torch.manual_seed(0)
    x0 = torch.rand(steps, batch, g.inputs()[0].size)
    labels = torch.randint(0, 3, (batch,))
    with TensorBytes() as tb:
        net = Network(g, seed=0)
        x = x0.clone()
        engine = build_engine(g, net.weights, loss_trained(g), seed=0)
        preallocate_quires(engine)
        if mode in ("eprop", "ottt"):
            learner = OnlineLearner(g, dict(net.weights), batch=batch, rule=mode)
            for _ in range(2):
                with torch.no_grad():
                    learner.run(x, labels, engine, -1.0 / batch)
                engine.step()
        else:
            learner = CheckpointedBPTT(g, net, segment=8 if mode == "bptt_checkpoint" else None)
            for _ in range(2):
                scores = learner.run(x, engine, list(g.projections), -1.0 / batch)
                torch.nn.functional.cross_entropy(scores, labels, reduction="sum").backward()
                engine.step()
    return tb.peak


@pytest.mark.parametrize("mode,n,steps", [
    ("eprop", 128, 50),
    pytest.param("eprop", 128, 300, marks=pytest.mark.slow),
    pytest.param("ottt", 96, 60, marks=pytest.mark.slow),
    ("bptt_checkpoint", 32, 40),
    pytest.param("bptt_checkpoint", 32, 200, marks=pytest.mark.slow),
])
def test_measured_peak_within_10_percent_of_plan(mode, n, steps):
    """Tensor bytes allocated by a training run (TensorBytes, above the fixed pre-run baseline)."""
    g = loads_model(model_text(n=n, n_in=16))
    planned = memory_plan(g, batch=8, steps=steps, mode=mode, segment=8).training_bytes
    _measure(loads_model(model_text(n=4, n_in=16)), mode, 2)  # builds lazy caches (posit tables ...)
    measured = _measure(g, mode, steps)
    assert abs(measured - planned) <= 0.10 * planned, (measured, planned)


def reversible_text(n_in: int = 4, hidden: int = 64, blocks: int = 2, k: int = 3, batch: int = 8) -> str:
    return f"""
[model]
name = "rev"
dt = "1 ms"
duration = "20 ms"
output = "out"
[populations.inp]
type = "input"
size = {n_in}
[populations.h]
type = "LIF"
size = {hidden}
[populations.out]
type = "LI"
size = {k}
[inputs.inp]
encoding = "current"
[projections.p_in]
source = "inp"
target = "h"
init = {{ dist = "normal", mean = 0.0, std = 1.0 }}
rule = "bptt"
[projections.p_out]
source = "h"
target = "out"
init = {{ dist = "normal", mean = 0.0, std = 0.1 }}
rule = "bptt"
[reversible]
population = "h"
blocks = {blocks}
[training]
microbatch = {batch}
batch_size = {batch}
"""


def test_reversible_plan_grows_only_by_side_bits_and_is_picked():
    g = loads_model(reversible_text(hidden=256, n_in=256, k=10, batch=32))
    assert [p.mode for p in all_plans(g, batch=32, steps=100)] == ["reversible"]
    short, long = (memory_plan(g, batch=32, steps=t, mode="reversible", spike_rate=0.1) for t in (100, 1000))
    grown = {k for k in long.training if long.training[k] != short.training[k]}
    assert grown == {"input_buffer", "side_records"}
    assert long.training["side_records"] == reversible_side_bytes(g, 32, 1000, 0.1)
    # 768 LIF neurons (3 bits + 4 bytes x 10 % spikes) and 10 LI neurons (2 bits) per sample and step
    per_step = 3 * 768 * 32 // 8 + 2 * 10 * 32 // 8 + round(0.4 * 32 * 768)
    assert reversible_side_bytes(g, 32, 1, 0.1) == per_step
    assert pick_mode(g, "100x", batch=32, steps=1000).mode == "reversible"
    with pytest.raises(ValueError, match="reversible"):
        memory_plan(g, mode="bptt")
    with pytest.raises(ValueError, match="no \\[reversible\\] section"):
        memory_plan(loads_model(model_text()), mode="reversible")


def _measure_reversible(g, steps: int, batch: int = 8) -> tuple[int, int, float]:
    """Peak tensor bytes of inference and of two training steps, and the measured spike rate."""

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # many small float64 GEMMs: one thread is far faster on a busy machine
    try:
        return _run_reversible(g, steps, batch)
    finally:
        torch.set_num_threads(threads)


def _run_reversible(g, steps: int, batch: int) -> tuple[int, int, float]:
    from neuro.sim.reversible_network import ReversibleNetwork, side_bytes_per_step
    from neuro.training.reversible import reversible_engine

    gen = torch.Generator().manual_seed(0)
    with TensorBytes() as inference:
        x = torch.rand(steps, batch, g.inputs()[0].size, generator=gen)
        ReversibleNetwork(g, seed=0).scores(x)
    with TensorBytes() as training:
        x = torch.rand(steps, batch, g.inputs()[0].size, generator=gen)
        labels = torch.randint(0, 3, (batch,), generator=gen)
        net = ReversibleNetwork(g, seed=0)
        engine = reversible_engine(g, net)
        preallocate_quires(engine)
        for _ in range(2):
            scores = net.train_scores(x, engine, -1.0 / batch)
            torch.nn.functional.cross_entropy(scores, labels, reduction="sum").backward()
            engine.step()
    spikes = (net.last_side_bytes - steps * side_bytes_per_step(batch, net.sizes, 0)) / 4
    return inference.peak, training.peak, spikes / (steps * batch * sum(net.sizes[:-1]))


def test_reversible_measured_peak_within_10_percent_of_plan():
    """Inference and reversible training (TensorBytes), planned at the measured spike rate."""
    g = loads_model(reversible_text())
    inference, training, rate = _measure_reversible(g, steps=60)
    assert rate > 0
    plan = memory_plan(g, batch=8, steps=60, mode="reversible", spike_rate=rate)
    assert abs(inference - plan.inference_bytes) <= 0.10 * plan.inference_bytes, (inference, plan.inference)
    assert abs(training - plan.training_bytes) <= 0.10 * plan.training_bytes, (training, plan.training)
