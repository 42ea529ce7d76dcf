"""Norse networks built from a :class:`neuro.model.graph.ModelGraph`.

Populations step with the functional neuron layer :mod:`neuro.neurons` (Norse's update equations,
parameters as NamedTuples of 0-dim tensors, time constants as inverse seconds): the LIF step is
Norse's ``lif_feed_forward_step`` arithmetic with a surrogate whose *scale* is honoured, the readout
is Norse's ``li_feed_forward_step`` (tests check both against Norse bit for bit).

Conventions: tensors are ``(time, batch, neurons)``; time in seconds; membrane potentials are
dimensionless (threshold 1 by default).  A spike at step ``t`` depends on the input of step ``t``;
recurrent projections act one step later; a projection with delay ``d`` steps delivers the source's
activity of step ``t - d``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from neuro import neurons
from neuro.engine import Bounds, ParamType, Sign, snap_to_type
from neuro.model.graph import ModelGraph, Population, Projection
from neuro.numerics import NAMED_FORMATS

__all__ = ["Network", "RunResult"]


@dataclass
class RunResult:
    """What :meth:`Network.forward` returns.

    Attributes:
        readout: ``(T, B, n_out)`` membrane potential of an LI output population, or spikes.
        spikes: population -> ``(T, B, n)`` spikes (spiking populations and inputs).
        voltages: population -> ``(T, B, n)`` membrane potentials (when ``record=True``).
        currents: projection -> synaptic current jumps (when ``track=True``): one ``(T, B, M)``
            tensor for a feed-forward projection on the fast path, else a list of T ``(B, M)``
            tensors; their ``.grad`` after ``backward`` is the error signal of that projection.
        pre: projection -> ``(T, B, N)`` presynaptic activity seen by each projection (delays
            and recurrent shifts applied; when ``track=True``).
    """

    readout: torch.Tensor
    spikes: dict[str, torch.Tensor] = field(default_factory=dict)
    voltages: dict[str, torch.Tensor] = field(default_factory=dict)
    currents: dict[str, torch.Tensor | list[torch.Tensor]] = field(default_factory=dict)
    pre: dict[str, torch.Tensor] = field(default_factory=dict)


def _init_weight(proj: Projection, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    init = proj.init
    if init.dist == "file":  # given weights, read and checked by the model layer
        w = init.load(f"projections.{proj.name}.init")
    elif init.dist == "normal":
        w = torch.randn(shape, generator=generator, dtype=torch.float64) * init.std + init.mean
    elif init.dist == "uniform":
        w = torch.rand(shape, generator=generator, dtype=torch.float64) * (init.high - init.low) + init.low
    else:
        w = torch.full(shape, float(init.value), dtype=torch.float64)
    if proj.sign == "excitatory":
        w = w.abs()
    elif proj.sign == "inhibitory":
        w = -w.abs()
    if proj.bounds is not None:
        w = w.clamp(*proj.bounds)
    return w


def _needs_float64(fmt: str) -> bool:
    storage = NAMED_FORMATS.get(fmt)
    return fmt == "float64" or (storage is not None and not storage.fits_float32)


def compute_dtype(graph: ModelGraph) -> torch.dtype:
    """float64 when a projection stores float64 or a format whose values float32 cannot hold
    exactly (posit32, b-posits), else float32."""
    wide = any(_needs_float64(p.format) for p in graph.projections.values())
    return torch.float64 if wide else torch.float32


def param_type(proj: Projection) -> ParamType:
    """The engine's type of a projection's weights: its storage format, and its bounds or sign."""
    if proj.bounds is not None:
        constraint = Bounds(*proj.bounds)
    else:
        constraint = Sign(proj.sign) if proj.sign is not None else None
    return ParamType(constraint=constraint, storage=proj.format)


class Network(torch.nn.Module):
    """A spiking network built from a model graph.

    Args:
        graph: the typed model graph (``neuro.model.spec.load_model``).
        seed: seed of the weight initialisation (default: the graph's training seed).
        device: torch device.
        dtype: dtype of weights and states (default :func:`compute_dtype`: float32, or float64 for
            float64, posit32 and b-posit storage).
    Weights are ``torch.nn.Parameter`` in ``self.weights[projection]`` of shape
    ``graph.weight_shape(projection)`` (``(target, source)`` like ``torch.nn.Linear``), drawn from
    the projection's ``init`` and snapped to its storage format and bounds or sign
    (:func:`neuro.engine.snap_to_type`): what an engine would make of them, bit for bit.
    """

    def __init__(self, graph: ModelGraph, *, seed: int | None = None, device="cpu",
                 dtype: torch.dtype | None = None):
        super().__init__()
        self.graph = graph
        self.dtype = dtype = compute_dtype(graph) if dtype is None else dtype
        gen = torch.Generator().manual_seed(graph.training.seed if seed is None else seed)
        self.weights = torch.nn.ParameterDict()
        for name, proj in graph.projections.items():
            if graph.weight_shape(name) != graph.weight_shape(name)[:2] and proj.kind != "one_to_one":
                raise ValueError(
                    f"{graph.name}: projection {name} has multivector weights "
                    f"{graph.weight_shape(name)}; the Norse builder runs scalar weights only — feed "
                    "multivector inputs through neuro.algebra.GradeLinear instead"
                )
            w = _init_weight(proj, graph.weight_shape(name), gen)
            if dtype == torch.float32 and _needs_float64(proj.format):
                w = snap_to_type(w, param_type(proj)).to(dtype)  # a narrower dtype, asked for
            else:
                w = snap_to_type(w.to(dtype), param_type(proj))  # what an engine makes of w, bit for bit
            self.weights[name] = torch.nn.Parameter(w.to(device=device))
        #: population -> its :mod:`neuro.neurons` parameters (0-dim tensors of ``dtype``).
        self.neuron_params = {
            pop.name: neurons.neuron_parameters(pop, graph.dt, dtype=dtype, device=device)
            for pop in graph.populations.values() if pop.type != "input"
        }
        self._order = [p for p in graph.populations.values() if p.type != "input"]
        self._delays = {name: graph.delay_steps(name) for name in graph.projections}
        # A projection reads its source from the previous step when the source is updated at or
        # after its target in the step order (recurrent connections).
        position = {name: i for i, name in enumerate(graph.populations)}
        #: projection -> steps between the source's activity and its delivery (delay, +1 for
        #: recurrent connections).
        self.lags = {
            name: self._delays[name] + (1 if position[p.source] >= position[p.target] else 0)
            for name, p in graph.projections.items()
        }

    @property
    def device(self) -> torch.device:
        return next(iter(self.weights.values())).device

    # ------------------------------------------------------------------ running
    def initial_state(self, pop: Population, batch: int):
        """The resting :mod:`neuro.neurons` state of population ``pop`` for ``batch`` samples."""
        return neurons.initial_state(self.neuron_params[pop.name], (batch, pop.size), dtype=self.dtype,
                                     device=self.device)

    def _project(self, name: str, pre: torch.Tensor, detach: bool = False) -> torch.Tensor:
        """Synaptic current jumps ``(..., M)`` of projection ``name`` for presynaptic activity
        ``(..., N)``; ``detach``: use the weights without recording them in the autograd graph."""
        w = self.weights[name]
        if detach:
            w = w.detach()
        if self.graph.projections[name].kind == "one_to_one":
            return pre * w
        return pre @ w.T

    @staticmethod
    def _shift(x: torch.Tensor, lag: int) -> torch.Tensor:
        """``x`` (T, B, N) delayed by ``lag`` steps (zeros for the first ``lag`` steps)."""
        if lag == 0:
            return x
        if lag >= x.shape[0]:
            return torch.zeros_like(x)
        return torch.cat([torch.zeros_like(x[:lag]), x[:-lag]], dim=0)

    @staticmethod
    def _mark(c: torch.Tensor) -> torch.Tensor:
        """Make ``c``'s gradient available after ``backward`` (its ``.grad`` is the error signal)."""
        if c.requires_grad:
            c.retain_grad()
        else:
            c.requires_grad_(True)
        return c

    @property
    def layerwise(self) -> bool:
        """True when no projection feeds a population from one updated after it: then every
        population can run over all time steps at once, after its sources (the fast path)."""
        position = {name: i for i, name in enumerate(self.graph.populations)}
        return all(position[p.source] <= position[p.target] for p in self.graph.projections.values())

    def forward(self, inputs: torch.Tensor | dict[str, torch.Tensor], *, record: bool = False,
                track: bool = False, stepwise: bool = False) -> RunResult:
        """Run the network over a whole input sequence.

        Args:
            inputs: ``(T, B, n_in)`` for the single input population, or a dict per input
                population.  Spikes (0/1) or currents, as the encoding produced them.
            record: also return membrane potentials of every population.
            track: keep the synaptic currents and presynaptic activity of every projection (for
                learning rules).  The weights then enter the autograd graph detached: the error
                signals land in ``result.currents[...].grad`` and no ``W.grad`` is computed (run
                with ``track=False`` to get ``W.grad`` from autograd).
            stepwise: force the step-by-step loop over all populations (otherwise used only when
                a projection feeds back from a later population).  Without feedback the fast path
                computes each feed-forward projection's currents for all steps with one matmul,
                then loops over time with element-wise neuron updates only; self-recurrent
                projections are applied per step in both paths.
        """
        graph = self.graph
        inputs = graph.named_inputs(inputs)
        steps, batch = next(iter(inputs.values())).shape[:2]
        for pop in graph.inputs():
            x = inputs.get(pop.name)
            if x is None or x.dim() != 3 or x.shape[:2] != (steps, batch) or x.shape[2] != pop.size:
                raise ValueError(
                    f"{graph.name}: input {pop.name!r} must be a (T={steps}, B={batch}, {pop.size}) "
                    f"tensor, got {None if x is None else tuple(x.shape)}"
                )
        inputs = {name: x.to(device=self.device, dtype=self.dtype) for name, x in inputs.items()}
        if stepwise or not self.layerwise:
            return self._forward_steps(inputs, steps, batch, record, track)
        return self._forward_layers(inputs, steps, batch, record, track)

    def step_population(self, pop: Population, current: torch.Tensor, state):
        """One step of population ``pop`` driven by current jumps ``current`` ``(B, n)``.

        Returns ``(out, v, new_state)``: spikes (or the LI membrane), the membrane ``(B, n)`` and
        the new :mod:`neuro.neurons` state."""
        p = self.neuron_params[pop.name]
        if pop.type == "LI":
            out, state = neurons.li_step(current, state, p, self.graph.dt)
            return out, out, state
        z, state = neurons.lif_step(current, state, p, self.graph.dt)
        return z, state.v, state

    def _forward_layers(self, inputs: dict[str, torch.Tensor], steps: int, batch: int, record: bool,
                        track: bool) -> RunResult:
        graph = self.graph
        position = {name: i for i, name in enumerate(graph.populations)}
        acts: dict[str, torch.Tensor] = dict(inputs)  # population -> (T, B, n) activity
        voltages: dict[str, torch.Tensor] = {}
        currents: dict[str, torch.Tensor | list[torch.Tensor]] = {}
        pres: dict[str, torch.Tensor] = {}
        states = {pop.name: self.initial_state(pop, batch) for pop in self._order}
        for pop in self._order:
            feed, recurrent = [], []
            for proj in graph.incoming(pop.name):
                (recurrent if position[proj.source] >= position[pop.name] else feed).append(proj)
            drive = None
            for proj in feed:  # all steps at once: one (T*B, N) x (N, M) product
                pre = self._shift(acts[proj.source], self.lags[proj.name])
                c = self._project(proj.name, pre, detach=track)
                if track:
                    currents[proj.name] = self._mark(c)
                    pres[proj.name] = pre
                drive = c if drive is None else drive + c
            if drive is None:
                drive = torch.zeros(steps, batch, pop.size, device=self.device, dtype=self.dtype)
            drive_t = drive.unbind(0)
            for proj in recurrent:
                currents[proj.name] = []
                pres[proj.name] = []
            zeros = torch.zeros(batch, pop.size, device=self.device, dtype=self.dtype)
            outs, vs = [], []
            for t in range(steps):
                total = drive_t[t]
                for proj in recurrent:  # self-connections: the population's own past output
                    lag = self.lags[proj.name]
                    pre = outs[t - lag] if t >= lag else zeros
                    c = self._project(proj.name, pre, detach=track)
                    if track:
                        currents[proj.name].append(self._mark(c))
                        pres[proj.name].append(pre)
                    total = total + c
                out, v, states[pop.name] = self.step_population(pop, total, states[pop.name])
                outs.append(out)
                if record:
                    vs.append(v)
            acts[pop.name] = torch.stack(outs)
            if record:
                voltages[pop.name] = torch.stack(vs)
        return self._result(acts, inputs, voltages, currents, pres, record, track)

    def _forward_steps(self, inputs: dict[str, torch.Tensor], steps: int, batch: int, record: bool,
                       track: bool) -> RunResult:
        graph = self.graph
        history: dict[str, list[torch.Tensor]] = {name: list(x.unbind(0)) for name, x in inputs.items()}
        states = {pop.name: self.initial_state(pop, batch) for pop in self._order}
        voltages: dict[str, list[torch.Tensor]] = {pop.name: [] for pop in self._order}
        currents: dict[str, list[torch.Tensor]] = {name: [] for name in graph.projections}
        pres: dict[str, list[torch.Tensor]] = {name: [] for name in graph.projections}
        for pop in self._order:
            history[pop.name] = []
        zeros = {name: torch.zeros(batch, graph.populations[p.source].size, device=self.device,
                                   dtype=self.dtype) for name, p in graph.projections.items()}
        for t in range(steps):
            for pop in self._order:
                total = None
                for proj in graph.incoming(pop.name):
                    lag = self.lags[proj.name]
                    src = history[proj.source]
                    pre = src[t - lag] if t - lag >= 0 and t - lag < len(src) else zeros[proj.name]
                    c = self._project(proj.name, pre, detach=track)
                    if track:
                        currents[proj.name].append(self._mark(c))
                        pres[proj.name].append(pre)
                    total = c if total is None else total + c
                if total is None:
                    total = torch.zeros(batch, pop.size, device=self.device, dtype=self.dtype)
                out, v, states[pop.name] = self.step_population(pop, total, states[pop.name])
                history[pop.name].append(out)
                if record:
                    voltages[pop.name].append(v)
        acts = {name: torch.stack(seq) for name, seq in history.items()}
        volts = {name: torch.stack(v) for name, v in voltages.items()} if record else {}
        return self._result(acts, inputs, volts, currents, pres, record, track)

    def _result(self, acts, inputs, voltages, currents, pres, record: bool, track: bool) -> RunResult:
        graph = self.graph
        spikes = {name: z for name, z in acts.items()
                  if name in inputs or graph.populations[name].type != "LI"}
        result = RunResult(readout=acts[graph.output], spikes=spikes)
        if record:
            result.voltages = voltages
        if track:
            result.currents = {name: c for name, c in currents.items() if len(c)}
            result.pre = {name: (p if isinstance(p, torch.Tensor) else torch.stack(p)).detach()
                          for name, p in pres.items() if len(p)}
        return result

    def plastic(self, rule: str | tuple[str, ...]) -> list[str]:
        """Names of projections trained by ``rule`` (e.g. ``"bptt"``)."""
        rules = (rule,) if isinstance(rule, str) else rule
        return [name for name, p in self.graph.projections.items() if p.rule in rules]
