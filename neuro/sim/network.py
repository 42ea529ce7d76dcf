"""Norse networks built from a :class:`neuro.model.graph.ModelGraph`.

Populations keep Norse's state and parameter types (``LIFFeedForwardState``, ``LIFParameters``,
``LIState``; time constants as inverse seconds) and Norse's update equations.  The LIF step below
is Norse's ``lif_feed_forward_step`` arithmetic with one change: the spike non-linearity takes a
surrogate whose *scale* is honoured (Norse 1.1.0's ``super`` surrogate ignores ``alpha``, and its
default alpha=100 makes the other surrogates explode).  A test checks the forward pass against
Norse's own step bit for bit.  The leaky-integrator readout is Norse's ``li_feed_forward_step``.

Conventions: tensors are ``(time, batch, neurons)``; time in seconds; membrane potentials are
dimensionless (threshold 1 by default).  A spike at step ``t`` depends on the input of step ``t``;
recurrent projections act one step later; a projection with delay ``d`` steps delivers the source's
activity of step ``t - d``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import torch

from neuro.model.graph import ModelGraph, Population, Projection

__all__ = ["Network", "RunResult", "spike_fn", "lif_step", "SURROGATES"]

SURROGATES = ("superspike", "sigmoid", "triangle", "arctan")


def _norse():
    """Import Norse quietly (1.1.0 prints TorchScript deprecation warnings on import)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import norse.torch as norse_torch
        from norse.torch.functional import leaky_integrator, lif
    return norse_torch, lif, leaky_integrator


class _Spike(torch.autograd.Function):
    """Heaviside ``x > 0`` forward (Norse's strict threshold); a scaled surrogate backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, kind: str, scale: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.kind, ctx.scale = kind, scale
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        s = ctx.scale
        if ctx.kind == "superspike":  # Zenke & Ganguli 2018: 1 / (s|x| + 1)^2
            d = 1.0 / (s * x.abs() + 1.0) ** 2
        elif ctx.kind == "sigmoid":  # derivative of sigmoid(s x), peak normalised to 1
            sig = torch.sigmoid(s * x)
            d = 4.0 * sig * (1.0 - sig)
        elif ctx.kind == "triangle":
            d = (1.0 - s * x.abs()).clamp(min=0.0)
        else:  # arctan: 1 / (1 + (pi s x)^2)
            d = 1.0 / (1.0 + (math.pi * s * x) ** 2)
        return grad * d, None, None


def spike_fn(x: torch.Tensor, kind: str = "superspike", scale: float = 10.0) -> torch.Tensor:
    """Spikes ``H(x)`` (strict ``x > 0``) with a surrogate gradient of the given kind and scale."""
    if kind not in SURROGATES:
        raise ValueError(f"spike_fn: unknown surrogate {kind!r}; choose one of {SURROGATES}")
    return _Spike.apply(x, kind, float(scale))


def lif_step(current, state, p, dt: float, surrogate: str, scale: float):
    """One Euler step of Norse's LIF model (same arithmetic as ``lif_feed_forward_step``).

    Args:
        current: input current jump of this step, ``(batch, n)``.
        state: ``LIFFeedForwardState(v, i)``.
        p: ``LIFParameters`` (``tau_syn_inv``, ``tau_mem_inv`` in 1/s).
        dt: time step, seconds.
    Returns:
        ``(z, new_state)`` with spikes ``z`` of shape ``(batch, n)``.
    """
    i_new = state.i + current
    v_decayed = state.v + dt * p.tau_mem_inv * ((p.v_leak - state.v) + i_new)
    i_decayed = i_new + (-dt * p.tau_syn_inv * i_new)
    z = spike_fn(v_decayed - p.v_th, surrogate, scale)
    v_new = (1 - z) * v_decayed + z * p.v_reset
    return z, type(state)(v=v_new, i=i_decayed)


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


class Network(torch.nn.Module):
    """A spiking network built from a model graph.

    Args:
        graph: the typed model graph (``neuro.model.spec.load_model``).
        seed: seed of the weight initialisation (default: the graph's training seed).
        device: torch device.
        dtype: dtype of weights and states (float32, or float64 for posit32/b-posit storage).
    Weights are ``torch.nn.Parameter`` in ``self.weights[projection]`` of shape
    ``graph.weight_shape(projection)`` (``(target, source)`` like ``torch.nn.Linear``).
    """

    def __init__(self, graph: ModelGraph, *, seed: int | None = None, device="cpu",
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        norse_torch, _, _ = _norse()
        self.graph = graph
        self.dtype = dtype
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
            self.weights[name] = torch.nn.Parameter(w.to(device=device, dtype=dtype))
        self._params = {}
        for pop in graph.populations.values():
            if pop.type == "input":
                continue
            tau_syn_inv = 1.0 / pop.tau_syn if pop.tau_syn else 0.0
            kw = dict(device=device, dtype=dtype)
            if pop.type == "LI":
                self._params[pop.name] = norse_torch.LIParameters(
                    tau_syn_inv=torch.tensor(tau_syn_inv, **kw),
                    tau_mem_inv=torch.tensor(1.0 / pop.tau_mem, **kw),
                    v_leak=torch.tensor(pop.v_leak, **kw),
                )
            else:
                self._params[pop.name] = norse_torch.LIFParameters(
                    tau_syn_inv=torch.tensor(tau_syn_inv, **kw),
                    tau_mem_inv=torch.tensor(1.0 / pop.tau_mem, **kw),
                    v_leak=torch.tensor(pop.v_leak, **kw),
                    v_th=torch.tensor(pop.v_th, **kw),
                    v_reset=torch.tensor(pop.v_reset, **kw),
                    method="heaviside",
                )
        self._order = [p for p in graph.populations.values() if p.type != "input"]
        self._delays = {name: graph.delay_steps(name) for name in graph.projections}
        # A projection reads its source from the previous step when the source is updated at or
        # after its target in the step order (recurrent connections).
        position = {name: i for i, name in enumerate(graph.populations)}
        self._lag = {
            name: self._delays[name] + (1 if position[p.source] >= position[p.target] else 0)
            for name, p in graph.projections.items()
        }

    @property
    def device(self) -> torch.device:
        return next(iter(self.weights.values())).device

    # ------------------------------------------------------------------ running
    def _initial_state(self, pop: Population, batch: int):
        norse_torch, _, leaky_integrator = _norse()
        zeros = torch.zeros(batch, pop.size, device=self.device, dtype=self.dtype)
        if pop.type == "LI":
            return leaky_integrator.LIState(v=zeros + pop.v_leak, i=zeros.clone())
        state = norse_torch.LIFFeedForwardState(v=zeros + pop.v_leak, i=zeros.clone())
        extra = {"threshold": zeros.clone(), "refractory": zeros.clone()}
        return state, extra

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

    def _step_population(self, pop: Population, total: torch.Tensor, states: dict, dt: float):
        """One step of population ``pop`` driven by current jumps ``total`` (B, n): (out, v)."""
        p = self._params[pop.name]
        if pop.type == "LI":
            _, _, leaky_integrator = _norse()
            out, states[pop.name] = leaky_integrator.li_feed_forward_step(total, states[pop.name], p, dt)
            return out, out
        return self._spiking_step(pop, total, states, p, dt)

    def _forward_layers(self, inputs: dict[str, torch.Tensor], steps: int, batch: int, record: bool,
                        track: bool) -> RunResult:
        graph = self.graph
        position = {name: i for i, name in enumerate(graph.populations)}
        acts: dict[str, torch.Tensor] = dict(inputs)  # population -> (T, B, n) activity
        voltages: dict[str, torch.Tensor] = {}
        currents: dict[str, torch.Tensor | list[torch.Tensor]] = {}
        pres: dict[str, torch.Tensor] = {}
        states = {pop.name: self._initial_state(pop, batch) for pop in self._order}
        dt = graph.dt
        for pop in self._order:
            feed, recurrent = [], []
            for proj in graph.incoming(pop.name):
                (recurrent if position[proj.source] >= position[pop.name] else feed).append(proj)
            drive = None
            for proj in feed:  # all steps at once: one (T*B, N) x (N, M) product
                pre = self._shift(acts[proj.source], self._lag[proj.name])
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
                    lag = self._lag[proj.name]
                    pre = outs[t - lag] if t >= lag else zeros
                    c = self._project(proj.name, pre, detach=track)
                    if track:
                        currents[proj.name].append(self._mark(c))
                        pres[proj.name].append(pre)
                    total = total + c
                out, v = self._step_population(pop, total, states, dt)
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
        states = {pop.name: self._initial_state(pop, batch) for pop in self._order}
        voltages: dict[str, list[torch.Tensor]] = {pop.name: [] for pop in self._order}
        currents: dict[str, list[torch.Tensor]] = {name: [] for name in graph.projections}
        pres: dict[str, list[torch.Tensor]] = {name: [] for name in graph.projections}
        for pop in self._order:
            history[pop.name] = []
        zeros = {name: torch.zeros(batch, graph.populations[p.source].size, device=self.device,
                                   dtype=self.dtype) for name, p in graph.projections.items()}
        dt = graph.dt
        for t in range(steps):
            for pop in self._order:
                total = None
                for proj in graph.incoming(pop.name):
                    lag = self._lag[proj.name]
                    src = history[proj.source]
                    pre = src[t - lag] if t - lag >= 0 and t - lag < len(src) else zeros[proj.name]
                    c = self._project(proj.name, pre, detach=track)
                    if track:
                        currents[proj.name].append(self._mark(c))
                        pres[proj.name].append(pre)
                    total = c if total is None else total + c
                if total is None:
                    total = torch.zeros(batch, pop.size, device=self.device, dtype=self.dtype)
                out, v = self._step_population(pop, total, states, dt)
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

    def _spiking_step(self, pop: Population, current, states, p, dt: float):
        state, extra = states[pop.name]
        surrogate = pop.surrogate or "superspike"
        scale = pop.surrogate_scale if pop.surrogate_scale is not None else 10.0
        if pop.type == "LIFBox":  # no synaptic current: each step's input drives the membrane alone
            state = type(state)(v=state.v, i=torch.zeros_like(state.i))
            z, state = lif_step(current, state, p, dt, surrogate, scale)
        elif pop.type == "AdaptiveLIF":  # threshold v_th + b, b jumps by adapt_increment per spike
            p_eff = p._replace(v_th=p.v_th + extra["threshold"])
            z, state = lif_step(current, state, p_eff, dt, surrogate, scale)
            decay = math.exp(-dt / pop.tau_adapt)
            extra = dict(extra, threshold=extra["threshold"] * decay + pop.adapt_increment * z)
        else:
            z, state = lif_step(current, state, p, dt, surrogate, scale)
        if pop.refractory and pop.refractory > 0:
            steps = round(pop.refractory / dt)
            blocked = extra["refractory"] > 0
            z = torch.where(blocked, torch.zeros_like(z), z)
            state = type(state)(v=torch.where(blocked, p.v_reset.expand_as(state.v), state.v), i=state.i)
            countdown = (extra["refractory"] - 1).clamp(min=0)
            extra = dict(extra, refractory=torch.where(z > 0, float(steps), countdown))
        states[pop.name] = (state, extra)
        return z, state.v

    def plastic(self, rule: str | tuple[str, ...]) -> list[str]:
        """Names of projections trained by ``rule`` (e.g. ``"bptt"``)."""
        rules = (rule,) if isinstance(rule, str) else rule
        return [name for name, p in self.graph.projections.items() if p.rule in rules]
