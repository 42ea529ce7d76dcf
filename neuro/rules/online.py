"""Online eligibility-trace learning: e-prop (Bellec et al. 2020) and OTTT (Xiao et al. 2022).

Both rules run the network forward one time step at a time and hand the engine contributions
``post (B, M) x pre (B, N)`` through :meth:`UpdateEngine.accumulate_outer`: an eligibility trace (a
presynaptic trace ``pre``, times the postsynaptic pseudo-derivative) times a learning signal.
Nothing is stored per time step, so the memory of a training step does not grow with the number
of time steps ``T`` (see :mod:`neuro.training.plan` for the byte counts).

Neurons step with :func:`neuro.neurons.lif_step_psi` / :func:`neuro.neurons.li_step`, the
arithmetic of :class:`~neuro.sim.network.Network` (Norse's LIF / LI equations, the same surrogate
derivatives), so a forward pass here gives the Network's spikes (tested).  One Euler step of a LIF
neuron with input current jump ``I`` (dimensionless, per step) and ``a_m = dt / tau_mem``,
``a_s = dt / tau_syn``::

    i_new = i + I
    v'    = v + a_m * ((v_leak - v) + i_new)         # membrane before the threshold
    i     = i_new - a_s * i_new
    z     = H(v' - theta),  theta = v_th (+ b for AdaptiveLIF)
    v     = (1 - z) v' + z v_reset

Eligibility (reset derivative ignored, as in Bellec et al.): for a dense projection ``W (M, N)``
with presynaptic activity ``x (B, N)``, ``dv'_j/dW_ji = ev_i`` where the per-sample traces
``ei, ev (B, N)`` follow the same linear filters as the neuron::

    ei_new = ei + x;   ev = (1 - a_m) ev + a_m ei_new;   ei = (1 - a_s) ei_new

(For LIFBox ``ei`` is reset every step.)  So for LIF the eligibility trace factorises,
``e_ji = psi_j ev_i`` with ``psi = surrogate'(v' - theta)``: memory ``O(B (M + N))`` per projection.
For AdaptiveLIF (threshold ``theta = v_th + b``, ``b <- rho b + beta z``) e-prop adds the
threshold-adaptation eligibility ``ea (B, M, N)`` (per synapse, ``O(B M N)``)::

    e_ji = psi_j (ev_i - ea_ji);   ea <- rho ea + beta psi (ev - ea)

(with the max-membrane objective its snapshot per class is ``(B, K, M, N)``; it is not filtered by the
readout's filters: exact for an instantaneous readout, an approximation otherwise).

Objectives.  ``objective="max_membrane"`` (default) is the loss BPTT trains (``neuro.training.loop``): the
cross-entropy of the maximum over time of the readout membrane, ``E = sum_b CE(max_t v_out, label)``.
Its gradient touches only the step ``t*_k`` at which class ``k``'s membrane peaks, so the learner
keeps, per sample and class, a snapshot of the factors of ``dv_out,k(t)/dW`` taken whenever
``v_out,k`` reaches a new maximum (``O(B K (M + N))`` per projection, none per step), and hands
the engine ``err_k * snapshot_k`` once the sequence is over, ``err = softmax(max v) - onehot``.
``objective="per_step"``: ``E = sum_t CE(v_out(t), label)``, ``err(t) = softmax(v_out(t)) -
onehot`` paired with the factors of step ``t`` (summed, not averaged over ``T``, so the size of
contributions, hence the quire window, does not shrink with ``T``).  Measured on Yin-Yang: a
network trained on the per-step loss classifies well by its mean membrane but badly by its maximum
(84 %), the readout the model declares; the max-membrane objective fixes that.

Factors of ``dv_out,k(t)/dW`` (``S (B, K, M)``: the sensitivity of readout ``k`` to the membrane
``v'`` of the projection's target population; the eligibility ``pre = ev``):

* readout projection: exact, ``dv_out,k/dW_kj = ev_j`` (the LI readout is linear).
* ``eprop`` (Bellec et al.): ``S_kj = B_kj F(psi)_j`` with ``B`` the readout weight (``feedback =
  "symmetric"``, current values) or a fixed random matrix (``"random"``, or for populations that
  do not project to the readout), ``F`` the readout's own synaptic and membrane filters (the
  filtered eligibility ``F_kappa(e)`` of Bellec et al.), and the presynaptic factor ``F(ev) / F(1)``
  (``O(B (M + N))`` instead of the per-synapse ``F(psi ev)``: ``F(psi ev) ~ F(psi) F(ev) / F(1)``).
  Measured on Yin-Yang: pairing ``F(psi)`` with the unfiltered ``ev(t)`` instead trains to 96.1 %
  with seed 42 but stalls at 59 % with seed 1; ``F(ev) / F(1)`` follows the per-synapse trace.
* ``ottt`` (Xiao et al.): the sensitivity at the current step only, backpropagated through the
  layers ("spatial" gradient): ``S_q = psi_q sum_r (S_r a_m(r)) W_{q->r}`` over feed-forward
  projections, ``S_out = identity``.

Both are exact for one hidden layer without recurrence when the readout is instantaneous
(``tau_mem = tau_syn = dt``) and the reset is taken as a constant jump (its derivative ignored, as
e-prop does); tests check this against autograd, also for AdaptiveLIF.

Per-step contributions are buffered ``chunk`` steps at a time (a fixed ``(chunk, B, M)`` /
``(chunk, B, N)`` buffer allocated once) and handed to the engine as one ``accumulate_outer`` with
``K = chunk * B``; max-membrane contributions go as one ``accumulate_outer`` with ``B K`` rows.
The AdaptiveLIF ``ea`` term is not an outer product: it is summed per microbatch in a float64
``(M, N)`` buffer (fixed microbatch shape: deterministic) and handed over with ``accumulate``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from neuro import neurons
from neuro.rules.registry import Rule, register

if TYPE_CHECKING:  # the rules layer sits below the model layer: graphs are only read here
    from neuro.model.graph import ModelGraph, Population

__all__ = ["ONLINE_RULES", "OBJECTIVES", "OnlineLearner", "check_online_graph"]

ONLINE_RULES = ("eprop", "ottt")
OBJECTIVES = ("max_membrane", "per_step")
#: Learning-signal feedback of e-prop: the readout weights themselves, or a fixed random matrix.
FEEDBACKS = ("symmetric", "random")


def check_online_graph(graph: ModelGraph) -> None:
    """Raise ValueError (naming the entry) if the online rules cannot run ``graph``.

    Supported: one input population, LIF / LIFBox / AdaptiveLIF hidden populations, an LI output,
    dense feed-forward projections (source earlier in graph order) and recurrent self-projections,
    no delays, no refractory periods, scalar weights.
    """
    ins = graph.inputs()
    if len(ins) != 1:
        raise ValueError(f"{graph.name}: online rules need exactly one input population, found {len(ins)}")
    if graph.populations[graph.output].type != "LI":
        raise ValueError(
            f"{graph.name}: online rules need an LI output population (populations."
            f'{graph.output}.type = "LI")'
        )
    position = {n: i for i, n in enumerate(graph.populations)}
    for name, proj in graph.projections.items():
        if proj.delay:
            raise ValueError(f"{graph.name}: projections.{name}.delay: online rules support no delays")
        if graph.weight_shape(name) != graph.weight_shape(name)[:2] or proj.kind == "one_to_one":
            raise ValueError(f"{graph.name}: projections.{name}: online rules need dense scalar weights")
        if proj.kind == "recurrent" and proj.source != proj.target:
            raise ValueError(f"{graph.name}: projections.{name}: only self-recurrent projections")
        if proj.kind == "dense" and position[proj.source] >= position[proj.target]:
            raise ValueError(f"{graph.name}: projections.{name}: feedback from a later population")
        if graph.populations[proj.source].type == "LI":
            raise ValueError(f"{graph.name}: projections.{name}: an LI population cannot be a source")
    for pop in graph.populations.values():
        if pop.spiking and pop.refractory:
            raise ValueError(
                f"{graph.name}: populations.{pop.name}.refractory: online rules support "
                'no refractory period (set it to "0 ms")'
            )


@dataclass
class _Pop:
    """Per-population constants and buffers (all ``(B, n)`` unless noted)."""

    pop: Population
    a_m: float
    a_s: float
    state: tuple  # the neuro.neurons state (its tensors are this learner's buffers, updated in place)
    out: torch.Tensor  # this step's output (spikes, or the LI membrane)
    params: tuple  # neuro.neurons parameters (0-d tensors, as neuro.sim.network builds them)


class OnlineLearner:
    """Step-by-step forward pass with online e-prop / OTTT contributions to an engine.

    Args:
        graph: the model graph (see :func:`check_online_graph` for what is supported).
        weights: projection name -> weight tensor ``(M, N)`` (e.g. ``Network.weights``); updated
            only by the engine.
        batch: samples per forward pass (the microbatch), fixed: buffers are allocated for it.
        rule: ``"eprop"`` or ``"ottt"``.
        trained: names of the projections that receive contributions.
        feedback: ``"symmetric"`` or ``"random"`` (e-prop learning-signal weights).
        chunk: time steps per ``accumulate_outer`` call.
        dtype: dtype of states and traces.
        seed: seed of the random feedback matrices.
        learn: False for inference only: no traces or contribution buffers are allocated.
        objective: ``"max_membrane"`` (BPTT's loss) or ``"per_step"`` (see the module docstring).
    Every buffer is allocated in the constructor; :meth:`run` allocates only per-step temporaries.
    """

    def __init__(
        self,
        graph: ModelGraph,
        weights: dict[str, torch.Tensor],
        *,
        batch: int,
        rule: str = "eprop",
        trained: list[str] | None = None,
        feedback: str = "symmetric",
        chunk: int = 8,
        dtype: torch.dtype = torch.float32,
        seed: int = 0,
        learn: bool = True,
        objective: str = "max_membrane",
    ) -> None:
        check_online_graph(graph)
        if rule not in ONLINE_RULES:
            raise ValueError(f"OnlineLearner: rule must be one of {ONLINE_RULES}, got {rule!r}")
        if objective not in OBJECTIVES:
            raise ValueError(f"OnlineLearner: objective must be one of {OBJECTIVES}, got {objective!r}")
        if feedback not in FEEDBACKS:
            raise ValueError(f"OnlineLearner: feedback must be one of {FEEDBACKS}, got {feedback!r}")
        self.graph, self.weights, self.batch, self.rule = graph, weights, int(batch), rule
        self.dtype, self.chunk, self.feedback, self.objective = dtype, int(chunk), feedback, objective
        self.learn = bool(learn)
        self.trained = [] if not learn else list(graph.projections) if trained is None else list(trained)
        dt = graph.dt
        self.dt = dt
        kw = dict(dtype=dtype)
        self.order = [p for p in graph.populations.values() if p.type != "input"]
        self.input = graph.inputs()[0]
        self.pops: dict[str, _Pop] = {}
        for pop in self.order:
            params = neurons.neuron_parameters(pop, dt, dtype=dtype)
            self.pops[pop.name] = _Pop(
                pop=pop,
                a_m=dt / pop.tau_mem,
                a_s=dt * (1.0 / pop.tau_syn if pop.tau_syn else 0.0),
                state=neurons.initial_state(params, (self.batch, pop.size), dtype=dtype),
                out=torch.zeros(self.batch, pop.size, **kw),
                params=params,
            )
        out = graph.output
        k = graph.populations[out].size
        self.n_out = k
        per_step = objective == "per_step"
        # Presynaptic traces per projection; contribution buffers (per step) or snapshots (max).
        self.ei: dict[str, torch.Tensor] = {}
        self.ev: dict[str, torch.Tensor] = {}
        self.ea: dict[str, torch.Tensor] = {}
        self.ea_sum: dict[str, torch.Tensor] = {}
        self.post_buf: dict[str, torch.Tensor] = {}
        self.pre_buf: dict[str, torch.Tensor] = {}
        self.snap_post: dict[str, torch.Tensor] = {}
        self.snap_pre: dict[str, torch.Tensor] = {}
        self.snap_ea: dict[str, torch.Tensor] = {}
        for name, proj in graph.projections.items():
            if not self.learn:
                break
            m, n = graph.weight_shape(name)
            self.ei[name] = torch.zeros(self.batch, n, **kw)
            self.ev[name] = torch.zeros(self.batch, n, **kw)
            if name not in self.trained:
                continue
            if per_step:
                self.post_buf[name] = torch.zeros(self.chunk, self.batch, m, **kw)
                self.pre_buf[name] = torch.zeros(self.chunk, self.batch, n, **kw)
            else:
                self.snap_pre[name] = torch.zeros(self.batch, k, n, **kw)
                if proj.target != out:
                    self.snap_post[name] = torch.zeros(self.batch, k, m, **kw)
            if rule == "eprop" and graph.populations[proj.target].type == "AdaptiveLIF":
                self.ea[name] = torch.zeros(self.batch, m, n, **kw)
                if per_step:
                    self.ea_sum[name] = torch.zeros(m, n, dtype=torch.float64)
                else:
                    self.snap_ea[name] = torch.zeros(self.batch, k, m, n, **kw)
        # e-prop: the pseudo-derivative (per hidden population) and the presynaptic trace (per trained
        # projection into a hidden population) low-passed by the readout's filters (current, membrane).
        self.fpsi: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self.fev: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._norm = [0.0, 0.0]  # the same filters applied to a constant 1
        if self.learn and rule == "eprop":
            self.fpsi = {p.name: self._pair(p.size) for p in self.order if p.type != "LI"}
            self.fev = {
                n: self._pair(self.ev[n].shape[1])
                for n in self.trained
                if n in self.ev and graph.projections[n].target != out
            }
        # max-membrane objective: the running maximum of the readout membrane (the scores).
        self.best = torch.zeros(self.batch, k, **kw)
        # Learning-signal weights (e-prop): population -> (K, M) fixed random, or None (symmetric).
        gen = torch.Generator().manual_seed(int(seed) + 7919)
        self.random_feedback: dict[str, torch.Tensor] = {}
        self.readout_proj: dict[str, str] = {}
        for pop in self.order:
            if pop.type == "LI":
                continue
            direct = [p.name for p in graph.outgoing(pop.name) if p.target == out]
            if direct and feedback == "symmetric":
                self.readout_proj[pop.name] = direct[0]
            elif rule == "eprop":
                self.random_feedback[pop.name] = (
                    torch.randn(k, pop.size, generator=gen, dtype=torch.float64) / math.sqrt(pop.size)
                ).to(dtype)
        self._filled = 0

    def _pair(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(self.batch, n, dtype=self.dtype), torch.zeros(self.batch, n, dtype=self.dtype)

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Zero every state and trace in place (start of a new sequence)."""
        for st in self.pops.values():
            st.state.v.fill_(float(st.pop.v_leak))
            for t in st.state[1:]:
                if t is not None:
                    t.zero_()
            st.out.zero_()
        for d in (self.ei, self.ev, self.ea, self.snap_post, self.snap_pre, self.snap_ea):
            for t in d.values():
                t.zero_()
        for fi, fv in [*self.fpsi.values(), *self.fev.values()]:
            fi.zero_()
            fv.zero_()
        self._norm = [0.0, 0.0]
        self.best.fill_(-math.inf)
        self._filled = 0

    def buffer_bytes(self) -> int:
        """Bytes of every buffer this learner allocated (states, traces, chunk buffers)."""
        tensors = [t for st in self.pops.values() for t in (*st.state, st.out) if t is not None]
        tensors += [self.best] + [t for pair in [*self.fpsi.values(), *self.fev.values()] for t in pair]
        for d in (
            self.ei,
            self.ev,
            self.ea,
            self.ea_sum,
            self.post_buf,
            self.pre_buf,
            self.random_feedback,
            self.snap_post,
            self.snap_pre,
            self.snap_ea,
        ):
            tensors += list(d.values())
        return sum(t.numel() * t.element_size() for t in tensors)

    # ------------------------------------------------------------------ one step
    def _pre(self, name: str, x_in: torch.Tensor) -> torch.Tensor:
        proj = self.graph.projections[name]
        if proj.source == self.input.name:
            return x_in
        # a self-recurrent source has not been updated yet this step: its output is z(t - 1)
        return self.pops[proj.source].out

    def step(self, x_t: torch.Tensor) -> dict[str, torch.Tensor]:
        """Advance one time step with input ``x_t (B, n_in)``; returns population -> ``psi``
        (the pseudo-derivative ``(B, M)`` of spiking populations) and updates every trace."""
        graph = self.graph
        psis: dict[str, torch.Tensor] = {}
        for pop in self.order:
            st = self.pops[pop.name]
            total = None
            for proj in graph.incoming(pop.name):
                pre = self._pre(proj.name, x_t)
                c = pre @ self.weights[proj.name].detach().T
                total = c if total is None else total + c
                if not self.learn:
                    continue
                # trace of dv'/dW (same linear filters as the neuron)
                ei, ev = self.ei[proj.name], self.ev[proj.name]
                if pop.type == "LIFBox":
                    ei.copy_(pre)
                else:
                    ei.add_(pre)
                ev.mul_(1.0 - st.a_m).add_(ei, alpha=st.a_m)
                if pop.type != "LIFBox":
                    ei.sub_(ei * st.a_s)
            if total is None:
                total = torch.zeros_like(st.out)
            if pop.type == "LI":
                z, new = neurons.li_step(total, st.state, st.params, self.dt)
            else:
                z, psis[pop.name], new = neurons.lif_step_psi(total, st.state, st.params, self.dt)
            for buf, value in zip(st.state, new):  # the buffers keep their storage
                if buf is not None:
                    buf.copy_(value)
            st.out.copy_(z)
        return psis

    # ------------------------------------------------------------------ learning
    def _sensitivity(self, psis: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``S (B, K, M)`` per hidden population: ``dv_out,k / dv'_j`` as the rule approximates it."""
        out = self.pops[self.graph.output]
        sens: dict[str, torch.Tensor] = {}
        if self.rule == "eprop":
            a_m, a_s = out.a_m, out.a_s
            filtered = [(self.fpsi[n], psis[n]) for n in psis] + [(self.fev[n], self.ev[n]) for n in self.fev]
            for (fi, fv), x in filtered:
                fi.add_(x)  # the readout's filters, as applied to its input current
                fv.mul_(1.0 - a_m).add_(fi, alpha=a_m)
                fi.sub_(fi * a_s)
            n_i = self._norm[0] + 1.0
            self._norm = [n_i - n_i * a_s, (1.0 - a_m) * self._norm[1] + a_m * n_i]
            for name in psis:
                fv = self.fpsi[name][1]
                fb = self.readout_proj.get(name)
                b = self.weights[fb].detach() if fb is not None else self.random_feedback[name]
                sens[name] = b * fv[:, None, :]
            return sens
        for pop in reversed(self.order):  # OTTT: spatial backprop at this step
            if pop.type == "LI":
                continue
            acc = None
            for proj in self.graph.outgoing(pop.name):
                if proj.kind == "recurrent":
                    continue
                w = self.weights[proj.name].detach()
                if proj.target == self.graph.output:
                    g = (out.a_m * w).expand(self.batch, -1, -1)
                elif proj.target in sens:
                    g = (sens[proj.target] * self.pops[proj.target].a_m) @ w
                else:
                    continue
                acc = g if acc is None else acc + g
            sens[pop.name] = (
                psis[pop.name][:, None, :] * acc
                if acc is not None
                else torch.zeros(self.batch, self.n_out, pop.size, dtype=self.dtype)
            )
        return sens

    def _pre_factor(self, name: str) -> torch.Tensor:
        """The eligibility's presynaptic factor ``(B, N)``: ``ev``, or for e-prop into a hidden population
        ``F(ev) / F(1)``, the trace averaged with the readout's filter weights (so that ``F(psi ev) ~
        F(psi) F(ev) / F(1)``)."""
        if name in self.fev:
            return self.fev[name][1] / self._norm[1]
        return self.ev[name]

    def _flush(self, engine, scale: float) -> None:
        n = self._filled
        if not n:
            return
        for name in self.trained:
            post, pre = self.post_buf[name][:n], self.pre_buf[name][:n]
            engine.accumulate_outer(
                self.weights[name], post.reshape(-1, post.shape[-1]), pre.reshape(-1, pre.shape[-1]), scale
            )
        self._filled = 0

    def _per_step(self, err: torch.Tensor, sens: dict[str, torch.Tensor], engine, scale: float) -> None:
        """Buffer this step's contributions ``err(t) S(t) x ev(t)`` (hand them over every ``chunk``)."""
        slot = self._filled
        for name in self.trained:
            tgt = self.graph.projections[name].target
            post = err if tgt == self.graph.output else torch.einsum("bk,bkm->bm", err, sens[tgt])
            self.post_buf[name][slot].copy_(post)
            self.pre_buf[name][slot].copy_(self._pre_factor(name))
            if name in self.ea:
                self.ea_sum[name].sub_(torch.einsum("bm,bmn->mn", post, self.ea[name]).to(torch.float64))
        self._filled += 1
        if self._filled == self.chunk:
            self._flush(engine, scale)

    def _snapshot(self, new: torch.Tensor, sens: dict[str, torch.Tensor]) -> None:
        """Keep the factors of ``dv_out,k/dW`` where class ``k``'s membrane reached a new maximum
        (``new (B, K)`` bool)."""
        keep = new[:, :, None]
        for name in self.trained:
            tgt = self.graph.projections[name].target
            torch.where(
                keep, self._pre_factor(name)[:, None, :], self.snap_pre[name], out=self.snap_pre[name]
            )
            if name in self.snap_post:
                torch.where(keep, sens[tgt], self.snap_post[name], out=self.snap_post[name])
            if name in self.snap_ea:
                snap = self.snap_ea[name]
                torch.where(keep[..., None], self.ea[name][:, None], snap, out=snap)

    def _hand_max(self, err: torch.Tensor, engine, scale: float) -> None:
        """``sum_{b,k} err_bk * snapshot_bk`` for every trained projection (``err (B, K)``)."""
        rows = self.batch * self.n_out
        for name in self.trained:
            w = self.weights[name]
            if name in self.snap_post:
                post = err[:, :, None] * self.snap_post[name]
            else:  # readout projection: row k of W gets err_k ev
                post = err[:, :, None] * torch.eye(self.n_out, dtype=self.dtype)
            engine.accumulate_outer(w, post.reshape(rows, -1), self.snap_pre[name].reshape(rows, -1), scale)
            if name in self.snap_ea:
                ea = torch.einsum("bkm,bkmn->mn", post, self.snap_ea[name]).to(torch.float64)
                engine.accumulate(w, ea * -scale)

    def _adapt_traces(self, psis: dict[str, torch.Tensor]) -> None:
        """AdaptiveLIF: ``ea <- rho ea + beta psi (ev - ea)`` (after this step's contributions)."""
        for name, ea in self.ea.items():
            pop = self.graph.populations[self.graph.projections[name].target]
            psi, ev = psis[pop.name], self.ev[name]
            rho = math.exp(-self.dt / pop.tau_adapt)
            jump = pop.adapt_increment * psi[:, :, None] * (ev[:, None, :] - ea)  # before ea decays
            ea.mul_(rho).add_(jump)

    def run(
        self, x: torch.Tensor, labels: torch.Tensor | None = None, engine=None, scale: float = 1.0
    ) -> tuple[torch.Tensor, float]:
        """Run a whole sequence ``x (T, B, n_in)``; with ``labels (B,)`` and an ``engine``, hand it
        ``scale * (-dE/dW)`` (``scale`` e.g. ``1 / global batch``).

        Returns ``(scores (B, K), loss)``: the maximum over time of the readout membrane (the
        ``max_membrane`` readout) and ``sum_b E_b`` (per-step objective: divided by ``T``; 0.0
        without labels).
        """
        steps = x.shape[0]
        if x.shape[1] != self.batch:
            raise ValueError(f"OnlineLearner: built for batch {self.batch}, got {x.shape[1]}")
        self.reset()
        learn = labels is not None and engine is not None and self.learn
        per_step = self.objective == "per_step"
        out = self.pops[self.graph.output]
        scores = self.best
        loss = 0.0
        onehot = None
        if labels is not None:
            onehot = torch.nn.functional.one_hot(labels, self.n_out).to(self.dtype)
        for t in range(steps):
            psis = self.step(x[t].to(self.dtype))
            v_out = out.out
            new = v_out > scores
            torch.where(new, v_out, scores, out=scores)
            if labels is not None and per_step:
                logp = torch.log_softmax(v_out, dim=1)
                loss -= float((logp * onehot).sum())
            if not learn:
                continue
            sens = self._sensitivity(psis)
            if per_step:
                self._per_step(logp.exp() - onehot, sens, engine, scale)
            else:
                self._snapshot(new, sens)
            self._adapt_traces(psis)
        if labels is not None and not per_step:
            logp = torch.log_softmax(scores, dim=1)
            loss = -float((logp * onehot).sum())
            if learn:
                self._hand_max(logp.exp() - onehot, engine, scale)
        if learn:
            self._flush(engine, scale)
            for name, s in self.ea_sum.items():
                engine.accumulate(self.weights[name], s * scale)
                s.zero_()
        return scores.clone(), loss / steps if per_step else loss


# ==================================================================================================
# Registration
# ==================================================================================================


def plan_terms(graph, *, batch: int, steps: int, mode: str, segment: int | None, dtype_bytes: int):
    """Memory-plan terms of :class:`OnlineLearner` with the max-membrane objective (bytes): per
    projection ``ei, ev (B, N)``; per trained projection the class snapshots ``(B, K, N)``, plus
    ``(B, K, M)`` into a hidden population; AdaptiveLIF e-prop ``ea (B, M, N)`` and its snapshot
    ``(B, K, M, N)``; e-prop's readout-filtered pseudo-derivatives ``2 (B, n)`` per hidden population
    and filtered traces ``2 (B, N)`` per trained projection into one; the sensitivities ``(B, K,
    n)`` per hidden population (step workspace).  Nothing grows with ``steps``.  Returns
    ``(components, notes)``."""
    d, k = dtype_bytes, graph.populations[graph.output].size
    hidden = [p for p in graph.populations.values() if p.type not in ("input", "LI")]
    traces = snapshots = 0
    for name, proj in graph.projections.items():
        shape = graph.weight_shape(name)
        m, n = shape[0], math.prod(shape[1:])
        traces += 2 * batch * n * d
        if proj.rule == "none":
            continue
        into_hidden = proj.target != graph.output
        snapshots += batch * k * (n + (m if into_hidden else 0)) * d
        if mode == "eprop" and into_hidden:
            traces += 2 * batch * n * d
        if mode == "eprop" and graph.populations[proj.target].type == "AdaptiveLIF":
            traces += batch * m * n * d
            snapshots += batch * k * m * n * d
    if mode == "eprop":
        traces += sum(2 * batch * p.size * d for p in hidden)
    notes = []
    if mode == "eprop" and any(p.type == "AdaptiveLIF" for p in hidden):
        notes.append("AdaptiveLIF e-prop keeps per-synapse threshold traces ea (B, M, N)")
    sensitivities = sum(batch * k * p.size * d for p in hidden)
    return {"eligibility_traces": traces, "signal_buffers": snapshots, "step_workspace": sensitivities}, notes


register(Rule("eprop", "e-prop (Bellec et al. 2020): eligibility traces x learning signals, online", "loss",
              mode="eprop", plan=plan_terms,
              keys={"feedback": ("choice", "symmetric", FEEDBACKS)}))
register(Rule("ottt", "online training through time (Xiao et al. 2022): instantaneous spatial gradient",
              "loss", mode="ottt", plan=plan_terms))
