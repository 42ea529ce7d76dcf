"""Brian2 reference simulations built from the same :class:`neuro.model.graph.ModelGraph` as ours.

:func:`simulate_brian2` turns a graph, its weights and an input tensor into a Brian2 network, runs
it and returns a :class:`ReferenceResult` shaped like :class:`neuro.sim.network.RunResult` (spikes and
membrane potentials ``(T, B, n)``, readout) plus the final weights of every projection.

Model mapping (Brian2 equations with units; potentials are dimensionless, unit ``1``, as in the
model files; inverse time constants carry ``hertz``)::

    dv/dt = tau_mem_inv*((v_leak - v) + I) : 1      (unless refractory, when refractory > 0)
    dI/dt = -tau_syn_inv*I : 1                      (LIF, AdaptiveLIF, LI; LIFBox: I : 1, zeroed
                                                     after every state update)
    threshold  v > v_th (+ b for AdaptiveLIF)        reset  v = v_reset (b += adapt_increment)
    synapses   on_pre: I_post += w                   (delays: ``delay`` of the projection)

Alignment with Norse.  Norse adds a step's input to ``I`` *before* that step's membrane update, so
the spike at step ``k`` depends on the input of step ``k``; Brian2's default schedule applies
``on_pre`` after the state update, one step later.  Instead of shifting spike trains we give every
object an explicit place in the ``groups`` slot of Brian2's schedule, population by population in
graph order: input generators first; then for each population its incoming synaptic pathways, its
state update, its threshold and reset, and the postsynaptic pathways of its plastic synapses.  A
projection from an earlier population then delivers the same step's spikes (Norse's lag 0), a
projection from the population itself or a later one delivers the previous step's spikes (Norse's
recurrent lag 1), and a delay of ``d`` steps adds ``d`` -- exactly Norse's rule.  Brian2 step ``k``
is Norse step ``k``; spikes and voltages are recorded at the end of each step (after the reset),
which is what Norse returns.

Bit-identity.  With forward Euler (``method="euler"``), float64 parameters, ``v_leak = 0`` and the
``numpy`` target the generated arithmetic is Norse's, term for term: rasters are identical and
membrane traces agree to a few ulp (Brian2 adds synaptic jumps one by one, Norse sums them with a
matmul).  The ``cython`` target is compiled in its own cache directory with
``-O3 -ffp-contract=off`` (no ``-ffast-math``, no FMA contraction), which keeps the same
arithmetic; Brian2's default flags do not.  ``method="exact"`` integrates the linear equations
exactly (a different discrete model, for the statistical comparison).

Plasticity.  Per-synapse traces, event-driven (decayed by ``exp(-dt/tau)`` per step), the
presynaptic pathway before the postsynaptic one (a same-step pre/post pair is LTP only), the same
conventions as :mod:`neuro.rules.traces`.  ``stdp_pair``::

    on_pre:  I_post += w; apre += a_plus; w = clip(w + apost*f_minus(w), low, high)
    on_post: apost -= a_minus; w = clip(w + apre*f_plus(w), low, high)

with ``f = 1`` (additive), ``f_minus = u**mu``, ``f_plus = (1 - u)**mu`` and ``u = (w - low) / (high -
low)`` (multiplicative mu = 1, power law); nearest-spike pairing resets the trace (``apre = a_plus``)
instead of adding.  ``stdp_triplet`` (Pfister & Gerstner 2006)::

    on_pre:  I_post += w; w = clip(w - o1*(a2_minus + a3_minus*r2), low, high); r1 += 1; r2 += 1
    on_post: w = clip(w + r1*(a2_plus + a3_plus*o2), low, high); o1 += 1; o2 += 1

``rstdp`` (Izhikevich 2007): eligibility ``c`` decays by ``exp(-dt/tau_eligibility)`` at the start
of each step, pre/post events add ``-a_minus apost`` / ``+a_plus apre`` to it (unit traces), and after
the postsynaptic pathway a shared dopamine ``d = d*exp(-dt/tau_reward) + reward(t)`` (a TimedArray of
the ``reward`` argument) changes ``w = clip(w + dt*d*c, low, high)``.

Brian2 is imported lazily (it is slow to import and replaces ``sys.excepthook``).
"""

from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from neuro.model.graph import ModelGraph, Population, Projection
from neuro.model.units import import_brian2
from neuro.rules import registry
from neuro.sim.network import RunResult

__all__ = [
    "ReferenceResult",
    "simulate_brian2",
    "brian2_equations",
    "TARGETS",
    "METHODS",
    "supported_rules",
]

TARGETS = ("numpy", "cython")
METHODS = ("euler", "exact")

#: Compiler flags of the cython target: Brian2's defaults without -ffast-math and without FMA
#: contraction, which would change the arithmetic.
CYTHON_FLAGS = ["-w", "-O3", "-ffp-contract=off", "-fno-fast-math"]


@functools.cache
def _brian2():
    """Brian2 (imported quietly, :func:`neuro.model.units.import_brian2`), set up for the reference:
    float64 and a quiet log."""
    brian2 = import_brian2()
    brian2.prefs.core.default_float_dtype = np.float64
    # Keep Brian2's log quiet (it writes a debug log file per process otherwise).
    brian2.prefs.logging.file_log = False
    brian2.prefs.logging.console_log_level = "ERROR"
    return brian2


@dataclass
class ReferenceResult(RunResult):
    """:class:`~neuro.sim.network.RunResult` of a Brian2 run plus its final weights.

    Attributes:
        weights: projection -> final weights, float64, same shape as the Norse weights
            (``(target, source)`` or ``(size,)``).
        wall_s: seconds spent in ``Network.run`` (summed over the batch), excluding the build.
    """

    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    wall_s: float = 0.0


def brian2_equations(pop: Population, method: str = "euler") -> str:
    """Brian2 equations (text) for a non-input population; see the module docstring."""
    unless = " (unless refractory)" if pop.refractory and pop.refractory > 0 else ""
    lines = [f"dv/dt = tau_mem_inv*((v_leak - v) + I) : 1{unless}"]
    if pop.type == "LIFBox":
        lines.append("I : 1")
    else:
        lines.append("dI/dt = -tau_syn_inv*I : 1")
        lines.append("tau_syn_inv : hertz (shared, constant)")
    lines += ["tau_mem_inv : hertz (shared, constant)", "v_leak : 1 (shared, constant)"]
    if pop.spiking:
        lines += ["v_th : 1 (shared, constant)", "v_reset : 1 (shared, constant)"]
    if pop.type == "AdaptiveLIF":
        lines += ["b : 1", "adapt_decay : 1 (shared, constant)", "adapt_increment : 1 (shared, constant)"]
    return "\n".join(lines)


def supported_rules() -> tuple[str, ...]:
    """The rules the reference expresses: loss-based and fixed rules run with fixed weights, local
    rules through their registered Brian2 counterpart (:class:`~neuro.rules.registry.Brian2Synapse`)."""
    return tuple(n for n in registry.names()
                 if registry.get(n).kind != "local" or registry.get(n).brian2 is not None)


def _plastic_synapse(proj: Projection, dt: float) -> tuple[registry.Brian2Synapse, dict]:
    """A plastic projection's Brian2 synapse (its rule's declaration) and its namespace with units."""
    rule = registry.get(proj.rule)
    syn = rule.brian2(rule.values(proj.params, proj.bounds), proj.bounds, dt)
    second = _brian2().second
    return syn, {k: v * second if k in syn.seconds else v for k, v in syn.namespace.items()}


def _dopamine(syn, reward: np.ndarray, clock, place, base: int, k: int) -> None:
    """Eligibility decay before the step's pathways, dopamine and weight change after them."""
    b2 = _brian2()
    ta = b2.TimedArray(reward, dt=clock.dt, name=f"reward_{syn.name}")
    syn.namespace[ta.name] = ta
    code = [
        ("c = c*c_decay", base + k),
        (f"d = d*d_decay + {ta.name}(t)", base + 950 + 2 * k),
        ("w = clip(w + dt_s*d*c, w_low, w_high)", base + 951 + 2 * k),
    ]
    for text, order in code:
        place(syn.run_regularly(text, clock=clock), order)


@contextlib.contextmanager
def _codegen(target: str, cache_dir: str | os.PathLike | None):
    """Set Brian2's code generation target (and cython flags / cache) for the duration of a run."""
    b2 = _brian2()
    prefs = b2.prefs
    saved = {"codegen.target": prefs["codegen.target"]}
    if target == "cython":
        saved["codegen.cpp.extra_compile_args_gcc"] = list(prefs["codegen.cpp.extra_compile_args_gcc"])
        saved["codegen.runtime.cython.cache_dir"] = prefs["codegen.runtime.cython.cache_dir"]
        if cache_dir is None:
            cache_dir = Path.home() / ".cache" / "neuro" / "brian2_cython_nofastmath"
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        prefs["codegen.cpp.extra_compile_args_gcc"] = list(CYTHON_FLAGS)
        prefs["codegen.runtime.cython.cache_dir"] = str(cache_dir)
    prefs["codegen.target"] = target
    try:
        yield
    finally:
        for k, v in saved.items():
            prefs[k] = v


def _to_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().to("cpu", torch.float64).numpy()


def simulate_brian2(
    graph: ModelGraph,
    inputs: torch.Tensor | dict[str, torch.Tensor],
    weights: dict[str, torch.Tensor],
    *,
    method: str = "euler",
    target: str = "numpy",
    record: bool = True,
    cache_dir: str | os.PathLike | None = None,
    plastic: bool = True,
    reward: torch.Tensor | None = None,
) -> ReferenceResult:
    """Run the graph in Brian2 on the given inputs and weights.

    Args:
        graph: the model graph (``neuro.model.spec.load_model``).
        inputs: ``(T, B, n_in)`` for a single input population, or a dict per input population:
            0/1 spikes for spiking encodings, currents for ``current`` encodings (the same tensor
            that is passed to :class:`neuro.sim.network.Network`).
        weights: projection -> weights (``Network.weights``; converted to float64).
        method: ``"euler"`` (Norse's discretisation) or ``"exact"`` (Brian2's exact integration).
        target: Brian2 code generation target, ``"numpy"`` (default; bit-identical arithmetic) or
            ``"cython"`` (compiled without fast-math into ``cache_dir``, default
            ``~/.cache/neuro/brian2_cython_nofastmath``).
        record: record membrane potentials of every non-input population.
        plastic: run the plasticity of local-rule projections (their registered Brian2 synapses)
            (False: fixed weights).
        reward: ``(T, B)`` dopamine released at each step, for ``rstdp`` projections (default 0).
    Returns:
        :class:`ReferenceResult`: ``spikes[pop]`` ``(T, B, n)`` float64 0/1 (inputs included),
        ``voltages[pop]`` ``(T, B, n)`` (after reset, as Norse returns them), ``readout``,
        ``weights[proj]`` final weights.  Each batch element is an independent Brian2 run.
    """
    if method not in METHODS:
        raise ValueError(f"reference: method must be one of {METHODS}, got {method!r}")
    if target not in TARGETS:
        raise ValueError(f"reference: target must be one of {TARGETS}, got {target!r}")
    for proj in graph.projections.values():
        if proj.rule not in supported_rules():
            raise ValueError(
                f"reference: projection {proj.name} uses rule {proj.rule!r}, which has no Brian2 "
                f"counterpart ({registry.get(proj.rule).brian2_note}); the reference expresses "
                f"{supported_rules()} (gradient rules run with fixed weights)"
            )
        if graph.weight_shape(proj.name) not in (
            (graph.populations[proj.target].size, graph.populations[proj.source].size),
            (graph.populations[proj.target].size,),
        ):
            raise ValueError(f"reference: projection {proj.name} has multivector weights")
    inputs = graph.named_inputs(inputs)
    steps, batch = next(iter(inputs.values())).shape[:2]
    if reward is None:
        reward = torch.zeros(steps, batch, dtype=torch.float64)
    if tuple(reward.shape) != (steps, batch):
        raise ValueError(f"reference: reward must be (T, B) = {(steps, batch)}, got {tuple(reward.shape)}")
    per_run = [
        _run_one(
            graph,
            {k: v[:, b] for k, v in inputs.items()},
            weights,
            method,
            target,
            record,
            cache_dir,
            plastic,
            _to_numpy(reward[:, b]),
        )
        for b in range(batch)
    ]
    spikes = {k: torch.stack([r[0][k] for r in per_run], dim=1) for k in per_run[0][0]}
    for name, x in inputs.items():
        spikes[name] = x.detach().to("cpu", torch.float64)
    volts = {k: torch.stack([r[1][k] for r in per_run], dim=1) for k in per_run[0][1]}
    # Weights: with a batch > 1 each run learns on its own; return the first run's weights stacked
    # on a leading batch axis only when they differ.
    final: dict[str, torch.Tensor] = {}
    for k in per_run[0][2]:
        ws = [r[2][k] for r in per_run]
        final[k] = ws[0] if all(torch.equal(ws[0], w) for w in ws[1:]) else torch.stack(ws)
    out = graph.populations[graph.output]
    readout = spikes[out.name] if out.spiking else volts[out.name]
    return ReferenceResult(
        readout=readout,
        spikes=spikes,
        voltages=volts if record else {},
        weights=final,
        wall_s=sum(r[3] for r in per_run),
    )


def _run_one(graph, inputs, weights, method, target, record, cache_dir, plastic, reward):
    """One Brian2 run of one batch element; returns (spikes, voltages, weights, wall seconds)."""
    import time

    b2 = _brian2()
    second, hertz = b2.second, b2.hertz
    dt = graph.dt
    steps = next(iter(inputs.values())).shape[0]
    clock = b2.Clock(dt=dt * second)
    objs: list = []
    groups: dict[str, object] = {}
    order = 0

    def place(obj, slot_order):
        obj.when = "groups"
        obj.order = slot_order

    with _codegen(target, cache_dir):
        # Input populations: spike generators (spiking encodings) or TimedArray currents.
        currents: dict[str, np.ndarray] = {}
        for pop in graph.inputs():
            x = inputs[pop.name]
            enc = graph.encodings[pop.name]
            if enc.spiking:
                t_idx, n_idx = torch.nonzero(x > 0, as_tuple=True)
                gen = b2.SpikeGeneratorGroup(
                    pop.size,
                    n_idx.numpy().astype(np.int64),
                    t_idx.numpy() * dt * second,
                    clock=clock,
                    name=f"in_{pop.name}*",
                    when="groups",
                    order=order,
                )
                order += 1
                groups[pop.name] = gen
                objs.append(gen)
            else:
                currents[pop.name] = _to_numpy(x)
        synapses: dict[str, object] = {}
        monitors: dict[str, tuple] = {}
        for pop in graph.populations.values():
            if pop.type == "input":
                continue
            base = 1000 * (1 + list(graph.populations).index(pop.name))
            ns = {"tau_mem_inv": 1.0 / pop.tau_mem * hertz, "v_leak": float(pop.v_leak)}
            kwargs = {}
            if pop.type != "LIFBox":
                ns["tau_syn_inv"] = (1.0 / pop.tau_syn) * hertz
            if pop.spiking:
                thr = "v > v_th + b" if pop.type == "AdaptiveLIF" else "v > v_th"
                reset = "v = v_reset" + ("\nb += adapt_increment" if pop.type == "AdaptiveLIF" else "")
                kwargs.update(threshold=thr, reset=reset)
                if pop.refractory and pop.refractory > 0:
                    # Norse blocks the `steps` steps after a spike; Brian2 re-enables a neuron in
                    # the state update of step t_spike + refractory/dt, so ask for one step more.
                    kwargs["refractory"] = (round(pop.refractory / dt) + 1) * dt * second
            group = b2.NeuronGroup(
                pop.size,
                brian2_equations(pop, method),
                method=method,
                clock=clock,
                name=f"pop_{pop.name}*",
                namespace={},
                **kwargs,
            )
            for k, v in ns.items():
                setattr(group, k, v)
            group.v = float(pop.v_leak)
            if pop.spiking:
                group.v_th = float(pop.v_th)
                group.v_reset = float(pop.v_reset)
            if pop.type == "AdaptiveLIF":
                group.adapt_decay = float(np.exp(-dt / pop.tau_adapt))
                group.adapt_increment = float(pop.adapt_increment)
            groups[pop.name] = group
            objs.append(group)
            # incoming projections
            k_in = 0
            for proj in graph.incoming(pop.name):
                w = _to_numpy(weights[proj.name])
                src = graph.populations[proj.source]
                if src.name in currents:
                    # Current input: Norse adds pre @ w.T each step; precompute it the same way.
                    pre = torch.from_numpy(currents[src.name])
                    wt = torch.from_numpy(w)
                    cur = (pre * wt) if proj.kind == "one_to_one" else pre @ wt.T
                    lag = graph.delay_steps(proj.name)
                    if lag:
                        cur = torch.cat([torch.zeros(lag, cur.shape[1], dtype=cur.dtype), cur[:-lag]])
                    ta = b2.TimedArray(cur.numpy(), dt=dt * second, name=f"cur_{proj.name}*")
                    group.namespace[ta.name] = ta
                    runner = group.run_regularly(
                        f"I += {ta.name}(t, i)", clock=clock, name=f"curin_{proj.name}*"
                    )
                    place(runner, base + 100 + k_in)
                    k_in += 1
                    continue
                stdp = plastic and registry.get(proj.rule).kind == "local"
                if stdp:
                    syn_def, sns = _plastic_synapse(proj, dt)
                    syn = b2.Synapses(
                        groups[src.name],
                        group,
                        syn_def.model,
                        on_pre=syn_def.on_pre,
                        on_post=syn_def.on_post,
                        namespace=sns,
                        clock=clock,
                        name=f"syn_{proj.name}*",
                    )
                else:
                    syn = b2.Synapses(
                        groups[src.name],
                        group,
                        "w : 1",
                        on_pre="I_post += w",
                        clock=clock,
                        name=f"syn_{proj.name}*",
                    )
                if proj.kind == "one_to_one":
                    syn.connect(j="i")
                    wflat = w
                else:
                    jj, ii = np.meshgrid(np.arange(pop.size), np.arange(src.size), indexing="ij")
                    syn.connect(i=ii.ravel(), j=jj.ravel())
                    wflat = w[syn.j[:], syn.i[:]]
                syn.w = wflat
                d = graph.delay_steps(proj.name)
                if d:
                    syn.pre.delay = d * dt * second
                place(syn.pre, base + 100 + k_in)
                k_in += 1
                if stdp:
                    place(syn.post, base + 900 + k_in)
                if stdp and syn_def.reward:
                    _dopamine(syn, reward, clock, place, base, k_in)
                synapses[proj.name] = syn
                objs.append(syn)
            place(group.state_updater, base + 500)
            if pop.type == "LIFBox":
                place(group.run_regularly("I = 0", clock=clock, name=f"box_{pop.name}*"), base + 501)
            if pop.spiking:
                place(group.thresholder["spike"], base + 600)
                if pop.type == "AdaptiveLIF":
                    place(
                        group.run_regularly("b = b*adapt_decay", clock=clock, name=f"adapt_{pop.name}*"),
                        base + 601,
                    )
                place(group.resetter["spike"], base + 700)
                smon = b2.SpikeMonitor(group, when="end", name=f"spk_{pop.name}*")
            else:
                smon = None
            vmon = (
                b2.StateMonitor(group, "v", record=True, when="end", name=f"v_{pop.name}*")
                if (record or not pop.spiking)
                else None
            )
            monitors[pop.name] = (smon, vmon)
            objs += [m for m in (smon, vmon) if m is not None]
        net = b2.Network(*objs)
        t0 = time.perf_counter()
        net.run(steps * dt * second, namespace={})
        wall = time.perf_counter() - t0
        spikes: dict[str, torch.Tensor] = {}
        volts: dict[str, torch.Tensor] = {}
        for name, (smon, vmon) in monitors.items():
            n = graph.populations[name].size
            if smon is not None:
                z = torch.zeros(steps, n, dtype=torch.float64)
                k = np.rint(np.asarray(smon.t_[:]) / dt).astype(np.int64)
                z[torch.from_numpy(k), torch.from_numpy(np.asarray(smon.i[:], dtype=np.int64))] = 1.0
                spikes[name] = z
            if vmon is not None:
                v = torch.from_numpy(np.array(vmon.v[:], dtype=np.float64).T.copy())
                if v.shape[0] != steps:
                    raise RuntimeError(f"reference: recorded {v.shape[0]} steps, expected {steps}")
                volts[name] = v
        final: dict[str, torch.Tensor] = {}
        for name, syn in synapses.items():
            proj = graph.projections[name]
            w = np.asarray(syn.w[:], dtype=np.float64)
            if proj.kind == "one_to_one":
                final[name] = torch.from_numpy(w.copy())
            else:
                shape = graph.weight_shape(name)
                full = np.zeros(shape, dtype=np.float64)
                full[np.asarray(syn.j[:]), np.asarray(syn.i[:])] = w
                final[name] = torch.from_numpy(full)
        for name in graph.projections:
            if name not in final:
                final[name] = weights[name].detach().to("cpu", torch.float64).clone()
    return spikes, volts, final, wall
