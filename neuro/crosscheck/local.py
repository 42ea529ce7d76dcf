"""Local-rule models (pair, triplet and reward-modulated STDP) through our training code and Brian2.

Ours is the training path itself: :class:`neuro.sim.plastic.ClosedLoop` (the shared neuron step),
the rule module built by the registry (:func:`neuro.training.local.rule_for`) and the exact engine of
``neuro train`` (:func:`neuro.training.engines.build_engine` with ``local=True``).  Brian2 runs the same
graph (:func:`neuro.crosscheck.reference.simulate_brian2`) with every projection's weights -- the
plastic one and a fixed lateral one (Diehl & Cook's inhibition, without its diagonal when the
model sets ``lateral_self = false``) -- and the rule's registered Brian2 synapse.

Which synapses are compared, and why.  Brian2 updates a weight at every event (pre pathway, then
post pathway, clipping after each); the engine sums a step's contributions and rounds and clamps
once.  With the closed loop stepping the engine every ``dt`` the two are the same discrete model on
every synapse that never has a presynaptic and a postsynaptic spike in the same step: such a
synapse sees at most one event per step, so it gets the same change and the same clip on both
sides.  On a same-step pair they differ (a weight-dependent rule reads the step's starting weight
for both events, Brian2 the weight after the pre event; Brian2 clips between the two events), so
``max_abs_dw`` is taken over the other synapses, and ``max_abs_dw_all`` reports every synapse.
Both sides run in float64; the engine rounds each contribution's factors to its quire format
(posit32 for float64 storage, ~2**-26 relative), so the weights agree to ~1e-10 on a second of
Song 2000, not to float64's last bit.  A same-step pair at a bound leaves the two weights up to one
event apart, which in a long run eventually moves a spike (Song 2000 with 1000 inputs: first after
1.9 s); :data:`neuro.crosscheck.fidelity.PLASTIC_DURATION` keeps the default check to the first
second.

The replay (``max_abs_dw_replay``) feeds Brian2's own spike trains through the rule at the
model's ``update_interval`` (one engine step per interval, as training runs it): for additive
rules it agrees with Brian2 on the synapses that never reach a bound (``inside_bounds`` of them).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import torch

from neuro.crosscheck.inputs import check_inputs, initial_network, make_inputs
from neuro.crosscheck.reference import simulate_brian2
from neuro.model.graph import ModelGraph
from neuro.rules import registry
from neuro.sim.plastic import ClosedLoop, LocalModel
from neuro.training.engines import build_engine
from neuro.training.local import interval_steps, rule_for
from neuro.training.protocols import DistalReward

__all__ = ["COMPARED_SYNAPSES", "crosscheck_local"]

F64 = torch.float64

#: What ``max_abs_dw`` of a local-rule cross-check covers (written into ``fidelity.json``).
COMPARED_SYNAPSES = (
    "every synapse without a presynaptic and a postsynaptic spike in the same step: there both "
    "simulators apply the same change and the same clip (Brian2 updates per event, the engine once "
    "per step); on a same-step pair a weight-dependent rule reads another weight and Brian2 clips "
    "between the two events (max_abs_dw_all covers every synapse)"
)


def _max_abs(x: torch.Tensor) -> float:
    return float(x.abs().max()) if x.numel() else 0.0


def crosscheck_local(
    graph: ModelGraph,
    *,
    duration: float | None = None,
    seed: int | None = None,
    reward: torch.Tensor | None = None,
    target: str = "numpy",
    record: bool = False,
    weights: Mapping[str, torch.Tensor] | None = None,
    inputs: Mapping[str, torch.Tensor] | torch.Tensor | None = None,
) -> dict:
    """A local-rule model (:class:`neuro.sim.plastic.LocalModel`: input -> LIF / AdaptiveLIF through
    one plastic projection, optionally a fixed lateral projection) run by our closed loop, rule
    module and engine, weights stepped every ``dt``, and by Brian2, float64 on both sides (see the
    module docstring for which synapses are compared).

    Args:
        graph: the model graph; duration: override its duration (s); seed: weights and inputs
            (default: the training seed); reward: ``(T,)`` dopamine per step for ``rstdp`` (default:
            the model's distal-reward protocol, driven by our output spikes); target: Brian2 target.
        weights: initial weights of every projection (default: drawn from ``seed``).
        inputs: ``(T, 1, N)`` 0/1 spikes of the input population (default: :func:`make_inputs`),
            checked by :func:`neuro.crosscheck.inputs.check_inputs`.
    Returns:
        ``spikes_equal`` (output rasters identical), ``n_spikes_ours`` / ``n_spikes_ref``,
        ``max_abs_dw`` (closed loop vs Brian2 over the compared synapses, a share
        ``compared_share`` of them), ``max_abs_dw_all`` (every synapse), ``max_abs_dw_replay``
        (replay vs Brian2 over the synapses that stay inside the bounds, a share ``inside_bounds``),
        ``max_weight_change`` (Brian2's, to show that learning happened), ``rewards`` (dopamine),
        ``update_interval_steps``, ``brian2_run_s``; with ``record``, also ``"record"``: the output
        rasters ``z_ours`` / ``z_ref`` ``(T, 1, M)``, the weights ``w0``, ``w_ours``, ``w_ref``
        ``(M, N)`` and the ``compared`` mask ``(M, N)``.
    """
    model = LocalModel.from_graph(graph)
    proj = dataclasses.replace(graph.projections[model.plastic], format="float64")
    changes = {"projections": {**graph.projections, model.plastic: proj}}
    if duration is not None:
        changes["duration"] = float(duration)
    graph = dataclasses.replace(graph, **changes)
    seed = graph.training.seed if seed is None else seed
    given = make_inputs(graph, seed) if inputs is None else check_inputs(inputs, graph, one_trial=True)
    z_in = given[model.source] > 0  # (T, 1, N) bool
    steps = z_in.shape[0]
    is_reward = registry.get(proj.rule).reward
    protocol = None
    if is_reward and reward is None:
        opts = dict(graph.data.options) if graph.data is not None else {}
        protocol = DistalReward.from_options(graph.dt, opts, seed, 1)
    released = torch.zeros(steps, 1, dtype=F64)
    if reward is not None:
        released[:, 0] = reward.to(F64)

    def dopamine_at(s):
        def release(a, b):
            if protocol is not None:
                released[s : s + a.shape[0]] = protocol(a, b)
            return released[s : s + a.shape[0]]

        return release

    def loop_of() -> ClosedLoop:
        net = initial_network(graph, seed, F64, weights)
        engine = build_engine(graph, net.weights, [model.plastic], seed=seed, local=True)
        return ClosedLoop(graph, net, engine, rule_for(graph, model.plastic))

    ours = loop_of()
    w0 = ours.weight.detach().clone()  # as the engine registered it
    ref_weights = {k: w.detach().clone() for k, w in ours.network.weights.items()}
    if model.lateral is not None and not ours.lateral_self:
        ref_weights[model.lateral].fill_diagonal_(0.0)  # the loop spares a neuron its own spikes
    ours.reset(1)
    lo, hi = proj.bounds if proj.bounds is not None else (-math.inf, math.inf)
    inside = torch.ones_like(w0, dtype=torch.bool)  # synapses that never reach a bound
    z_out = []
    for s in range(steps):
        z_out.append(ours.run_interval(z_in[s : s + 1], reward=dopamine_at(s)))
        inside &= (ours.weight.detach() > lo) & (ours.weight.detach() < hi)
    z_out = torch.cat(z_out)
    ref = simulate_brian2(graph, {model.source: z_in.to(F64)}, ref_weights, target=target, record=False,
                          reward=released)
    z_ref = ref.spikes[model.target] > 0
    compared = torch.einsum("tm,tn->mn", z_ref[:, 0].double(), z_in[:, 0].double()) == 0
    w_ref, w_ours = ref.weights[model.plastic], ours.weight.detach().clone()
    interval = interval_steps(graph)
    replay = loop_of()
    replay.reset(1)
    for s in range(0, steps, interval):
        replay.rule.interval(replay.engine, replay.weight, z_in[s : s + interval], z_ref[s : s + interval],
                             reward=released[s : s + interval] if is_reward else None)
        replay.engine.step()
    out = {
        "spikes_equal": bool(torch.equal(z_out, z_ref)),
        "n_spikes_ours": int(z_out.sum()),
        "n_spikes_ref": int(z_ref.sum()),
        "max_abs_dw": _max_abs((w_ours - w_ref)[compared]),
        "max_abs_dw_all": _max_abs(w_ours - w_ref),
        "compared_share": float(compared.double().mean()),
        "max_abs_dw_replay": _max_abs((replay.weight.detach() - w_ref)[inside]),
        "inside_bounds": float(inside.double().mean()),
        "max_weight_change": _max_abs(w_ref - w0),
        "rewards": float(released.sum()),
        "update_interval_steps": interval,
        "brian2_run_s": ref.wall_s,
    }
    if record:
        out["record"] = {"z_ours": z_out, "z_ref": z_ref, "w0": w0, "w_ours": w_ours, "w_ref": w_ref,
                         "compared": compared}
    return out
