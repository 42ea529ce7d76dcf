"""Memory plans: bytes a model needs for inference and for each training mode, before anything runs.

:func:`memory_plan` reads only the model graph (sizes, neuron types, formats, rules) plus the batch
size ``B`` and the number of time steps ``T``, and returns a :class:`MemoryPlan`: a per-component
breakdown in bytes for inference and for training in one mode.  Components (``n``: neurons of a
population, ``M x N``: a projection's weight, ``d``: bytes of the compute dtype, 4 or 8):

* ``weights``: ``M N`` x bytes of the storage format (posit8: 1, posit16: 2, float32: 4 ...);
  ``weight_tensors``: the extra bytes of holding them in the compute dtype (posit storage is held
  in float32/float64 tensors; 0 for float storage).
* ``neuron_states``: ``B n`` x (the neuron state as :mod:`neuro.neurons` holds it -- v, i, threshold
  offset, refractory counter, as the type has them -- and the output) x ``d``; ``readout``:
  the running max-membrane scores ``B K d``.
* ``input_buffer``: the encoded input sequence of one microbatch, ``T B n_in d`` (the data
  pipeline encodes whole sequences; it is the same in every mode).
* ``step_workspace``: per-step temporaries, ``8 B n d`` per population (currents, decayed
  membrane, threshold distance, spikes, pseudo-derivative ...).
* ``quires``: one exact accumulator per weight, ``M N (8 L + 1)`` bytes: ``L`` int64 limbs of 32
  bits each plus a NaR byte.  The engine keeps one limb window per tensor; the training loops
  allocate it up front (:func:`neuro.training.engines.preallocate_quires`) as limbs -5..2, ``L = 8``
  (measured: surrogate-gradient, e-prop and OTTT contributions occupy bits 2**-160 .. 2**96 of a
  bposit32 quire, carry headroom included: tiny pseudo-derivatives far from threshold reach down
  to limb -5); a contribution outside it would widen the
  window, which the measured-peak test would catch.
* ``optimizer``: Adam moments ``exp_avg`` and ``exp_avg_sq``, ``2 M N`` x the engine's buffer
  dtype (float64 for 32-bit quire formats).
* ``engine_workspace``: transient memory of ``UpdateEngine.step`` (Adam, bposit32 quire, 7 limbs)
  on the largest weight: ``ENGINE_WORKSPACE_PER_WEIGHT`` bytes per entry (float64 copies,
  decoded moments, the exact ``lr * D`` and ``w + lr * D`` quires), measured with
  :class:`TensorBytes` and constant over shapes (128x128 .. 512x64).  ``accumulate_outer``'s
  transient (``outer_workspace``) never overlaps it.  ``step`` works in row blocks of a fixed
  byte budget (:func:`neuro.engine.step.step_block_rows`), so this is bounded whatever the size.
* ``outer_workspace`` (every training mode): ``accumulate_outer``'s transient on the largest weight,
  ``ACCUMULATE_OUTER_PER_WEIGHT`` bytes per entry (measured); every mode hands contributions to the
  engine while its forward/backward state is alive, so it belongs to that phase.
* ``eligibility_traces`` (eprop, ottt): ``ei, ev (B, N)`` per projection; e-prop adds its
  readout-filtered pseudo-derivatives ``2 (B, n)`` per hidden population and filtered traces
  ``2 (B, N)`` per trained projection into one, and for AdaptiveLIF targets ``ea (B, M, N)``;
  ``signal_buffers``: the max-membrane objective's class snapshots ``(B, K, N)`` per trained
  projection (plus ``(B, K, M)`` into a hidden population, ``(B, K, M, N)`` for AdaptiveLIF e-prop),
  handed to the engine once the sequence is over; the step workspace adds the sensitivities
  ``(B, K, n)`` per hidden population.
* ``saved_activations`` (bptt, bptt_checkpoint; :func:`neuro.rules.bptt.plan_terms`): autograd
  keeps ``SAVED_PER_NEURON_STEP`` tensors of
  ``(B, n)`` per population and step; checkpointing keeps one segment's worth plus the states at
  segment boundaries (``ceil(T / S) x 3 B n d``).  Measured: 4.0 per neuron-step.
* ``reversible`` (graphs with a ``[reversible]`` section only, :mod:`neuro.training.reversible`): float64
  fixed-point arithmetic, so states are ``2 B n 8`` (v, i) per layer and ``weight_tensors`` the
  quantised float64 copies; nothing per step but ``side_records`` (:func:`reversible_side_bytes`:
  3 bits per LIF neuron-step, 2 per LI neuron-step, 4 bytes per spike, at an assumed spike rate);
  ``signal_chunks``: ``8 x B x (M + N)`` float64 error signals handed to the engine per call, and
  ``outer_workspace`` as above, both during the backward pass; ``step_workspace``: 13 (forward) /
  22 (backward, one layer's local graph at a time) float64 ``(B, n)`` tensors per neuron, measured.

``training_bytes`` = persistent components + the larger of the two phases of :data:`PHASES`
(forward/backward transients, then the engine update); ``ratio = training_bytes /
inference_bytes``.  :func:`pick_mode` returns the first mode, in the
order of :data:`MODE_PREFERENCE` (exact gradients first, then recomputation, then the online
approximations), whose plan fits a budget; :func:`plan_main` is the ``neuro plan`` command.

:class:`TensorBytes` measures what the plan predicts: a ``TorchDispatchMode`` that adds up the
bytes of every tensor storage created while it is active and subtracts them when the storage is
freed, keeping the peak.  It counts exactly the tensors the plan counts (CPU RSS deltas are blurred
by the allocator, the Python heap and the import baseline), and it works the same on any machine.
"""

from __future__ import annotations

import json
import math
import re
import sys
import weakref
from dataclasses import dataclass, field

import torch

from neuro import neurons
from neuro.model.graph import ModelGraph
from neuro.numerics import STORAGE_BYTES
from neuro.rules import registry
from neuro.sim.network import compute_dtype
from neuro.training.modes import LOSS_MODES

__all__ = [
    "MODES",
    "MODE_PREFERENCE",
    "MemoryPlan",
    "TensorBytes",
    "memory_plan",
    "modes_for",
    "reversible_side_bytes",
    "all_plans",
    "pick_mode",
    "parse_budget",
    "plan_main",
    "format_table",
]

#: The loss-based training modes, in the order of preference of :func:`pick_mode`.
MODES = MODE_PREFERENCE = LOSS_MODES
#: Assumed fraction of LIF neuron-steps that spike, for the reversible side records (4 bytes a spike).
REVERSIBLE_SPIKE_RATE = 0.1
#: Transient float64 ``(B, n)`` tensors per neuron of a reversible model: a forward step (inference),
#: and a backward step (inversion, local recomputation and its gradients), measured with TensorBytes.
REVERSIBLE_FORWARD_PER_NEURON = 13
REVERSIBLE_BACKWARD_PER_NEURON = 22
#: Transient bytes of ``UpdateEngine.accumulate_outer`` per entry of the weight it adds into
#: (measured with TensorBytes on unscaled calls into 256x256 and 64x64 weights, bposit32 quire, 8
#: limbs).  Calls with a scale measure 161 (power-of-two scale) to 179 B per entry in isolation, and
#: small weights with many rows more (the row buffers dominate), but whole training runs agree with
#: the plan within 5 % at this figure (benchmarks/bench_memory.py, 256-wide layers) and within 10 %
#: in tests/test_plan.py; a per-call model (entries and rows) would be more faithful.  Every mode
#: hands contributions over while its forward/backward state is alive, so the largest weight's
#: transient adds to that phase.
ACCUMULATE_OUTER_PER_WEIGHT = 104
#: Time steps of error signals per engine call in the reversible backward (neuro.training.reversible.CHUNK).
REVERSIBLE_CHUNK = 8
#: Limbs per quire entry allocated up front (see the module docstring).
QUIRE_LIMBS = 8
#: Bytes of transient engine memory per entry of the largest weight during ``step`` (Adam).
ENGINE_WORKSPACE_PER_WEIGHT = 181 + 40 * QUIRE_LIMBS  # 501 bytes for 8 limbs
#: Transient components by phase: the forward/backward pass frees its activations before
#: ``UpdateEngine.step`` allocates its workspace, so a training peak adds the larger phase only.
PHASES = {
    "forward_backward": ("saved_activations", "step_workspace", "side_records", "signal_chunks",
                         "outer_workspace"),
    "update": ("engine_workspace",),
}


@dataclass
class MemoryPlan:
    """A memory plan (bytes).

    Attributes:
        model, mode, batch, steps: what was planned (``steps`` = T time steps, ``batch`` = samples
            per forward pass).
        inference: component -> bytes for a streaming forward pass.
        training: component -> bytes for one training step in ``mode``.
        segment: checkpoint segment length (bptt_checkpoint), else None.
    """

    model: str
    mode: str
    batch: int
    steps: int
    inference: dict[str, int]
    training: dict[str, int]
    segment: int | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def inference_bytes(self) -> int:
        return sum(self.inference.values())

    @property
    def training_bytes(self) -> int:
        """Peak of a training step: the persistent components plus the larger of the two phases
        that never overlap (:data:`PHASES`: the forward/backward transients, then the update)."""
        phase = {k for ks in PHASES.values() for k in ks}
        persistent = sum(v for k, v in self.training.items() if k not in phase)
        return persistent + max(sum(self.training.get(k, 0) for k in ks) for ks in PHASES.values())

    @property
    def ratio(self) -> float:
        return self.training_bytes / max(1, self.inference_bytes)

    def extra(self) -> dict[str, int]:
        """Training components beyond inference (component -> extra bytes), largest first."""
        out = {k: v - self.inference.get(k, 0) for k, v in self.training.items()}
        return dict(sorted(((k, v) for k, v in out.items() if v > 0), key=lambda kv: -kv[1]))

    def to_dict(self) -> dict:
        """JSON form: inference_bytes, training_bytes, ratio, mode and the breakdowns."""
        return {
            "model": self.model, "mode": self.mode, "batch": self.batch, "steps": self.steps,
            "segment": self.segment, "inference_bytes": self.inference_bytes,
            "training_bytes": self.training_bytes, "ratio": round(self.ratio, 4),
            "components": {"inference": self.inference, "training": self.training},
            "notes": self.notes,
        }


def _state_slots(pop, dt: float) -> int:
    """``(B, n)`` tensors a population holds between steps: its :mod:`neuro.neurons` state (v, i,
    threshold offset, refractory counter, as its type has them) and its output."""
    state = neurons.initial_state(neurons.neuron_parameters(pop, dt), (1, 1))
    return sum(x is not None for x in state) + 1


def _dtype_bytes(graph: ModelGraph) -> int:
    return 8 if compute_dtype(graph) == torch.float64 else 4


def _rows_cols(graph: ModelGraph, name: str) -> tuple[int, int]:
    """A projection's weight as (postsynaptic rows, everything else): multivector weights carry a
    trailing blade axis, one_to_one weights are a vector."""
    shape = graph.weight_shape(name)
    return shape[0], math.prod(shape[1:])


def _trained(graph: ModelGraph) -> list[str]:
    return [n for n, p in graph.projections.items() if p.rule not in ("none",)]


def _base(graph: ModelGraph, batch: int, steps: int) -> dict[str, int]:
    d = _dtype_bytes(graph)
    weights = sum(math.prod(graph.weight_shape(n)) * STORAGE_BYTES[p.format]
                  for n, p in graph.projections.items())
    resident = sum(math.prod(graph.weight_shape(n)) * d for n in graph.projections)
    states, work = 0, 0
    for pop in graph.populations.values():
        if pop.type == "input":
            continue
        slots = _state_slots(pop, graph.dt)
        states += batch * pop.size * slots * d
        work += 8 * batch * pop.size * d
    n_in = sum(p.size for p in graph.inputs())
    k = graph.populations[graph.output].size
    return {
        "weights": weights,
        "weight_tensors": max(0, resident - weights),
        "neuron_states": states,
        "readout": batch * k * d,
        "input_buffer": steps * batch * n_in * d,
        "step_workspace": work,
    }


def _engine(graph: ModelGraph, extra: tuple[tuple[int, int], ...] = ()) -> dict[str, int]:
    """Engine components for the trained projections plus ``extra`` (rows, cols) weights."""
    trained = _trained(graph)
    numel = [math.prod(graph.weight_shape(n)) for n in trained] + [m * n for m, n in extra]
    if not numel:
        return {}
    biggest = max(trained, key=lambda n: math.prod(graph.weight_shape(n)))
    from neuro.engine.step import step_block_rows
    m, n = max([_rows_cols(graph, biggest), *extra], key=math.prod)
    buf = 8  # Adam moments: float64 for the 32-bit quire formats neuro.training.loop uses
    return {
        "quires": sum(numel) * (8 * QUIRE_LIMBS + 1),
        "optimizer": 2 * sum(numel) * buf,
        # step() (Adam) works in blocks of rows of a fixed byte budget; accumulate_outer never overlaps
        "engine_workspace": step_block_rows(m, n, QUIRE_LIMBS) * n * ENGINE_WORKSPACE_PER_WEIGHT,
    }


def _outer_workspace(graph: ModelGraph) -> int:
    """``accumulate_outer``'s transient on the largest trained weight (bytes)."""
    return ACCUMULATE_OUTER_PER_WEIGHT * max((math.prod(graph.weight_shape(n)) for n in _trained(graph)),
                                             default=0)


def modes_for(graph: ModelGraph) -> tuple[str, ...]:
    """The training modes a graph allows: ``("reversible",)`` with a ``[reversible]`` section, else
    the other modes of :data:`MODES`."""
    return ("reversible",) if graph.reversible is not None else tuple(m for m in MODES if m != "reversible")


def _reversible_layers(graph: ModelGraph) -> tuple[list[int], list[tuple[int, int]]]:
    """Neurons per layer (LIF population, two sublayers per block, LI readout) and the block
    weights' shapes of a graph with a ``[reversible]`` section."""
    spec = graph.reversible
    width = graph.populations[spec.population].size // 2
    sizes = [2 * width] + [width] * (2 * spec.blocks) + [graph.populations[graph.output].size]
    return sizes, [(width, width)] * (2 * spec.blocks)


def reversible_side_bytes(graph: ModelGraph, batch: int, steps: int, spike_rate: float) -> int:
    """Side records of a reversible forward pass (bytes), kept until the backward pass reads them:

        T * ( sum_LIF 3 ceil(B n / 8)  +  2 ceil(B K / 8)  +  4 rate B sum_LIF n )

    (spike, membrane-leak and current-leak bits of every LIF neuron, two leak bits per LI readout
    neuron, packed 8 to a byte, and the int32 pre-reset membrane of each spike).  At 10 % spikes that
    is 3 + 3.2 = 6.2 bits per LIF neuron-step, against 4 float32 (128 bits) for BPTT.
    """
    sizes, _ = _reversible_layers(graph)
    lif = sizes[:-1]
    per_step = sum(3 * math.ceil(batch * n / 8) for n in lif) + 2 * math.ceil(batch * sizes[-1] / 8)
    return steps * (per_step + round(4 * spike_rate * batch * sum(lif)))


def _reversible(graph: ModelGraph, batch: int, steps: int, spike_rate: float, chunk: int,
                training: bool) -> dict[str, int]:
    """Components of the reversible model (float64 fixed-point arithmetic,
    :mod:`neuro.training.reversible`)."""
    sizes, blocks = _reversible_layers(graph)
    shapes = [_rows_cols(graph, n) for n in graph.projections] + blocks
    numel = sum(m * n for m, n in shapes)
    storage = STORAGE_BYTES[graph.projections[next(iter(graph.projections))].format]
    neurons = sum(sizes)
    n_in = sum(p.size for p in graph.inputs())
    out = {
        "weights": numel * storage,
        "weight_tensors": numel * 8,  # the float64 quantised copies used by every step
        "neuron_states": 2 * batch * neurons * 8,  # (v, i) of every layer
        "readout": batch * sizes[-1] * (16 if training else 8),  # running max (+ its time step)
        "input_buffer": steps * batch * n_in * _dtype_bytes(graph),
        "step_workspace": REVERSIBLE_FORWARD_PER_NEURON * batch * neurons * 8,
    }
    if training:
        out["step_workspace"] = REVERSIBLE_BACKWARD_PER_NEURON * batch * neurons * 8
        out["side_records"] = reversible_side_bytes(graph, batch, steps, spike_rate)
        out["signal_chunks"] = chunk * batch * sum(m + n for m, n in shapes) * 8
        out["outer_workspace"] = ACCUMULATE_OUTER_PER_WEIGHT * max(m * n for m, n in shapes)
        out.update(_engine(graph, tuple(blocks)))
    return out


def memory_plan(graph: ModelGraph, *, batch: int | None = None, steps: int | None = None,
                mode: str = "eprop", segment: int | None = None, chunk: int = 8,
                spike_rate: float = REVERSIBLE_SPIKE_RATE) -> MemoryPlan:
    """The memory plan of ``graph`` for ``batch`` samples x ``steps`` time steps in ``mode``.

    Args:
        graph: the model graph.
        batch: samples per forward pass (default: the model's ``training.microbatch``).
        steps: time steps T (default: ``duration / dt``).
        mode: one of :data:`MODES`.
        segment: checkpoint segment length for ``bptt_checkpoint`` (default ``ceil(sqrt(T))``).
        chunk: time steps per engine call in the online modes.
        spike_rate: fraction of LIF neuron-steps that spike (``reversible``: 4 bytes of side record each).
    """
    if mode not in MODES:
        raise ValueError(f"memory_plan: mode must be one of {MODES}, got {mode!r}")
    if mode not in modes_for(graph):
        raise ValueError(f"memory_plan: {graph.name} allows modes {', '.join(modes_for(graph))}, not {mode!r}"
                         + (" (it has no [reversible] section)" if mode == "reversible" else
                            " (it has a [reversible] section)"))
    batch = graph.training.microbatch if batch is None else int(batch)
    steps = graph.steps if steps is None else int(steps)
    if mode == "reversible":
        return MemoryPlan(model=graph.name, mode=mode, batch=batch, steps=steps,
                          inference=_reversible(graph, batch, steps, spike_rate, REVERSIBLE_CHUNK, False),
                          training=_reversible(graph, batch, steps, spike_rate, REVERSIBLE_CHUNK, True),
                          notes=[f"side records assume {spike_rate:.0%} of LIF neuron-steps spike "
                                 "(3 bits per neuron-step + 4 bytes per spike)"])
    d = _dtype_bytes(graph)
    inference = _base(graph, batch, steps)
    training = dict(inference)
    segment = (segment or math.ceil(math.sqrt(steps))) if mode == "bptt_checkpoint" else None
    rule = registry.get("bptt" if mode == "bptt_checkpoint" else mode)  # the algorithm the mode runs
    terms, notes = rule.plan(graph, batch=batch, steps=steps, mode=mode, segment=segment, dtype_bytes=d)
    for key, value in terms.items():  # the rule's own terms add to the shared components
        training[key] = training.get(key, 0) + value
    training.update(_engine(graph))
    training["outer_workspace"] = _outer_workspace(graph)
    return MemoryPlan(model=graph.name, mode=mode, batch=batch, steps=steps, inference=inference,
                      training=training, segment=segment if mode == "bptt_checkpoint" else None,
                      notes=notes)


def all_plans(graph: ModelGraph, *, batch: int | None = None, steps: int | None = None) -> list[MemoryPlan]:
    """One plan per mode the graph allows (:func:`modes_for`)."""
    return [memory_plan(graph, batch=batch, steps=steps, mode=m) for m in modes_for(graph)]


_BUDGET = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(x|b|kb|kib|mb|mib|gb|gib)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 10**3, "kib": 2**10, "mb": 10**6, "mib": 2**20, "gb": 10**9, "gib": 2**30}


def parse_budget(text: str) -> tuple[str, float]:
    """``"2x"`` -> ("ratio", 2.0); ``"64MiB"`` / ``"1e6"`` -> ("bytes", value).  Raises ValueError."""
    m = _BUDGET.match(str(text))
    if not m:
        raise ValueError(f"budget {text!r}: expected a ratio like '2x' or a size like '512MiB'")
    value, unit = float(m.group(1)), (m.group(2) or "b").lower()
    if unit == "x":
        return "ratio", value
    return "bytes", value * _UNITS[unit]


def fits(plan: MemoryPlan, budget: tuple[str, float]) -> bool:
    kind, value = budget
    return plan.ratio <= value if kind == "ratio" else plan.training_bytes <= value


def pick_mode(graph: ModelGraph, budget: str | tuple[str, float], *, batch: int | None = None,
              steps: int | None = None) -> MemoryPlan | None:
    """The first mode in :data:`MODE_PREFERENCE` whose plan fits ``budget``, or None."""
    budget = parse_budget(budget) if isinstance(budget, str) else budget
    for plan in all_plans(graph, batch=batch, steps=steps):
        if fits(plan, budget):
            return plan
    return None


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1024
    return f"{n:.2f} GiB"


def format_table(plans: list[MemoryPlan]) -> str:
    """A text table: one column per plan, one row per component, totals and ratio."""
    comps: list[str] = []
    for p in plans:
        for k in list(p.inference) + list(p.training):
            if k not in comps:
                comps.append(k)
    head = ["component", "inference"] + [p.mode for p in plans]
    rows = [head]
    for c in comps:
        rows.append([c, _human(plans[0].inference.get(c, 0))] + [_human(p.training.get(c, 0)) for p in plans])
    rows.append(["total", _human(plans[0].inference_bytes)] + [_human(p.training_bytes) for p in plans])
    rows.append(["ratio", "1.00x"] + [f"{p.ratio:.2f}x" for p in plans])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(cell.rjust(w) if i else cell.ljust(w) for i, (cell, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - 2, "-" * len(lines[0]))
    return "\n".join(lines)


def plan_main(path: str, batch: int | None = None, steps: int | None = None, mode: str | None = None,
              budget: str | None = None, as_json: bool = False) -> int:
    """``neuro plan MODEL.toml [--batch B] [--steps T] [--mode M] [--budget X] [--json]``.

    Prints the plan table (every mode, or ``mode``) or, with ``as_json``, one JSON object (the
    plan of ``mode``, or of the mode picked for ``budget``, or of ``eprop``; ``"plans"`` holds all
    of them).  Returns 0, or 1 with a message on stderr when the plan exceeds ``budget`` (naming the
    component that breaks it and the mode that would fit), 2 for a bad model file or argument.
    """
    from neuro.model.spec import ModelFileError, load_model

    try:
        graph = load_model(path)
        spec_budget = parse_budget(budget) if budget is not None else None
        if mode is not None and mode not in modes_for(graph):
            raise ValueError(f"--mode must be one of {', '.join(modes_for(graph))} for {graph.name}, "
                             f"got {mode!r}")
        every = all_plans(graph, batch=batch, steps=steps)
        plans = [p for p in every if p.mode == mode] if mode else every
    except (ModelFileError, ValueError, OSError) as exc:
        print(f"neuro plan: {exc}", file=sys.stderr)
        return 2
    chosen = plans[0] if mode else None
    fitting = None
    if spec_budget is not None:
        fitting = pick_mode(graph, spec_budget, batch=batch, steps=steps)
        chosen = chosen or fitting
    chosen = chosen or next((p for p in plans if p.mode == "eprop"), plans[0])
    if as_json:
        out = chosen.to_dict()
        out["plans"] = {p.mode: p.to_dict() for p in every}
        if spec_budget is not None:
            out["budget"] = budget
            out["fits"] = fits(chosen, spec_budget)
            out["fitting_mode"] = fitting.mode if fitting else None
        print(json.dumps(out, indent=2))
    else:
        print(f"memory plan of {graph.name}: batch {plans[0].batch}, {plans[0].steps} time steps")
        print(format_table(plans))
        for p in plans:
            for note in p.notes:
                print(f"note ({p.mode}): {note}")
    if spec_budget is not None and not fits(chosen, spec_budget):
        kind, value = spec_budget
        limit = value * chosen.inference_bytes if kind == "ratio" else value
        comp, extra = next(iter(chosen.extra().items()), ("weights", 0))
        advice = (f"mode {fitting.mode} fits ({_human(fitting.training_bytes)}, {fitting.ratio:.2f}x)"
                  if fitting else "no training mode fits; lower --batch or --steps")
        print(f"neuro plan: {graph.name} in mode {chosen.mode} needs {_human(chosen.training_bytes)} "
              f"({chosen.ratio:.2f}x inference), over the budget {budget} ({_human(limit)}); "
              f"the largest component beyond inference is {comp} ({_human(extra)}); {advice}",
              file=sys.stderr)
        return 1
    if spec_budget is not None and not as_json:
        print(f"budget {budget}: mode {chosen.mode} fits ({chosen.ratio:.2f}x inference)")
    return 0


class TensorBytes:
    """Context manager counting live bytes of tensor storages created inside it, and their peak.

    A ``TorchDispatchMode`` sees every aten op (factories included); for each op that returns a
    new (non-aliased) tensor it records the storage's bytes and registers a weakref finalizer that
    subtracts them when the storage is freed.  ``peak`` is the maximum of ``live`` over the block;
    tensors created before the block are not counted (a fixed baseline).

    Usage: ``with TensorBytes() as tb: ...; tb.peak``.
    """

    def __init__(self) -> None:
        self.live = 0
        self.peak = 0
        self._keys: dict[int, int] = {}
        self._mode = None

    def _free(self, key: int, nbytes: int) -> None:
        if self._keys.pop(key, None) is not None:
            self.live -= nbytes

    def _track(self, t) -> None:
        st = t.untyped_storage()
        nbytes = st.nbytes()
        key = st.data_ptr()
        if nbytes == 0 or key in self._keys:
            return
        self._keys[key] = nbytes
        self.live += nbytes
        self.peak = max(self.peak, self.live)
        weakref.finalize(st, self._free, key, nbytes)

    def __enter__(self) -> TensorBytes:
        import torch
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten

        tracker = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                aliased = any(r.alias_info is not None for r in func._schema.returns)
                if not aliased:
                    for t in tree_flatten(out)[0]:
                        if isinstance(t, torch.Tensor) and t.device.type == "cpu":
                            tracker._track(t)
                return out

        self._mode = _Mode()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._mode.__exit__(*exc)
