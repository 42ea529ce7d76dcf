"""Closed-loop simulation and training of local-plasticity models (STDP family) through the engine.

A local-rule model is one input population (Poisson or a data set's encoding) projecting onto one
spiking population (LIF or AdaptiveLIF) through a plastic projection (``stdp_pair``,
``stdp_triplet`` or ``rstdp``), optionally with a fixed recurrent projection on the target
(lateral inhibition).  The simulation is closed-loop: the plastic weights drive the neuron, the
neuron's spikes drive the rule, and the rule's contributions change the weights.

Update intervals
    Time is cut into update intervals of ``L`` steps.  Within an interval the weights are constant,
    so the feed-forward currents of all ``L`` steps are one matrix product, the neuron runs its
    (sequential) LIF recursion, the rule computes its traces for the whole interval in closed form
    and hands its contributions to the :class:`~neuro.engine.UpdateEngine`, and ``engine.step()``
    rounds ONCE per interval to the storage format and clamps to the bounds.  The loop itself is
    :class:`neuro.sim.plastic.ClosedLoop` (neurons stepped by :func:`neuro.neurons.lif_step_events`).

Protocol options (the ``[data]`` table; keys this module consumes, all optional)
    ``update_interval``: e.g. ``"10 ms"`` (default 10 ms).  ``trials``: independent trials run as a
    batch (poisson scenarios, default 1).  ``snapshots``: weight snapshots kept for the histogram
    over time (default 50).  Digits: ``normalise`` (sum of each neuron's input weights, default
    off), ``label_samples`` (training samples used for label assignment, default all),
    ``min_spikes`` / ``rate_step`` / ``max_presentations`` (Diehl & Cook's re-presentation: a sample
    that drew fewer than ``min_spikes`` output spikes is shown again with its rate raised by
    ``rate_step``, e.g. ``"32 Hz"``, at most ``max_presentations`` times, default 10; off by default).
    Distal reward: ``rewarded`` (index of the rewarded synapse, default 0), ``reward`` (dopamine
    per reward, default 0.5), ``reward_window`` ("10 ms": post spike this soon after a pre spike of
    the rewarded synapse earns a reward), ``reward_delay`` (["1 s", "3 s"], uniform).
    Every other key is passed to the data set.

Metrics (``metrics.json``): always ``test_accuracy`` / ``train_accuracy`` (null where no
classification is made), ``seconds``, ``weights_sha256``; Song scenarios ``share_below_10pct`` and
``share_above_90pct`` of ``g_max``; digits ``test_accuracy``; distal reward
``rewarded_weight`` and ``others_mean``.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import torch

from neuro.engine import UpdateEngine
from neuro.engine.params import Bounds, ParamType, Sign
from neuro.model.graph import ModelGraph
from neuro.numerics import BPOSIT32, NAMED_FORMATS, POSIT32, PositFormat
from neuro.rules.stdp import (
    PairSTDP,
    PairSTDPParameters,
    RewardSTDP,
    RSTDPParameters,
    TripletSTDP,
    TripletSTDPParameters,
)
from neuro.sim.network import Network
from neuro.sim.plastic import ClosedLoop, LocalModel

__all__ = ["ClosedLoop", "LocalModel", "train_local", "local_engine", "rule_for", "poisson_chunk"]

LOCAL_RULES = ("stdp_pair", "stdp_triplet", "rstdp")
_F64 = torch.float64


def _time(value, default: float, parse: str = "parse_time") -> float:
    """A ``[data]`` option in seconds (``"10 ms"`` or a number); ``parse="parse_rate"`` for Hz."""
    if value is None:
        return default
    if isinstance(value, int | float):
        return float(value)
    from neuro.model import spec

    return getattr(spec, parse)(str(value))


def rule_for(graph: ModelGraph, name: str):
    """The rule module (:class:`PairSTDP`, :class:`TripletSTDP`, :class:`RewardSTDP`) of a projection."""
    proj = graph.projections[name]
    params = proj.params
    lo, hi = proj.bounds if proj.bounds is not None else (0.0, 1.0)
    if proj.rule == "stdp_pair":
        mode = params.get("mode", "additive")
        mu = {"additive": 0.0, "multiplicative": 1.0}.get(mode)
        if mu is None:
            mu = float(params.get("mu", 0.0))
        p = PairSTDPParameters(
            params["tau_plus"],
            params["tau_minus"],
            params["a_plus"],
            params["a_minus"],
            mu,
            lo,
            hi,
            params.get("pairing", "all_to_all"),
            float(params.get("x_tar", 0.0)),
        )
        return PairSTDP(p, graph.dt)
    if proj.rule == "stdp_triplet":
        keys = TripletSTDPParameters._fields[:-1]
        p = TripletSTDPParameters(*(params[k] for k in keys), pairing=params.get("pairing", "all_to_all"))
        return TripletSTDP(p, graph.dt)
    if proj.rule == "rstdp":
        p = RSTDPParameters(*(params[k] for k in RSTDPParameters._fields))
        return RewardSTDP(p, graph.dt)
    raise ValueError(
        f"{graph.name}: projection {name} has rule {proj.rule!r}, not a local rule {LOCAL_RULES}"
    )


def _accumulation(storage: str) -> PositFormat:
    """Format of the rule's contributions and quire: wide enough for traces and amplitudes whatever
    the storage (posit32 for float64/posit32 storage, b-posit32 (~float32 precision) otherwise)."""
    return POSIT32 if storage in ("float64", "posit32") else BPOSIT32


def local_engine(
    graph: ModelGraph,
    network: Network,
    names: list[str],
    *,
    rounding: str = "nearest",
    seed: int = 0,
    accumulation: PositFormat | None = None,
) -> UpdateEngine:
    """An engine over the plastic projections: lr 1 (the rule's amplitudes carry the scale), no
    momentum, bounds/sign as declared, storage = the projection's format."""
    groups = []
    for name in names:
        proj = graph.projections[name]
        constraint = (
            Bounds(*proj.bounds)
            if proj.bounds is not None
            else (Sign(proj.sign) if proj.sign is not None else None)
        )
        groups.append(
            {
                "params": [network.weights[name]],
                "names": [name],
                "format": accumulation or _accumulation(proj.format),
                "lr": 1.0,
                "adam": False,
                "rounding": rounding,
                "type": ParamType(constraint=constraint, storage=proj.format),
            }
        )
    return UpdateEngine(groups, seed=seed)


def poisson_chunk(
    rate_hz: float, n: int, steps: int, dt: float, seed: int, trial: int, chunk: int, epoch: int = 0
) -> torch.Tensor:
    """``(steps, n)`` bool Poisson spikes of one trial's ``chunk``, from the counter-based stream
    ``(seed, "poisson_scenario", epoch, trial, chunk)``: the same whatever batch the trial is in."""
    from neuro.data import sample_generator

    gen = sample_generator(seed, "poisson_scenario", epoch, trial, chunk)
    u = torch.rand((steps, n), generator=gen, dtype=_F64)
    return u < min(1.0, rate_hz * dt)


# ==================================================================================================
# Naive per-step rounding (the baseline the engine avoids)
# ==================================================================================================


def naive_pair_interval(loop: ClosedLoop, z_in: torch.Tensor, storage: PositFormat) -> torch.Tensor:
    """Like :meth:`ClosedLoop.run_interval` for additive pair STDP, but the weight is updated and
    rounded to ``storage`` (nearest) after EVERY step in plain float64 arithmetic, as naive
    low-precision hardware would: updates below half an ulp vanish.  The weights the neuron sees
    still change once per interval, as in the engine path, so only the rounding differs."""
    out = loop.run_interval(z_in, learn=False)
    rule: PairSTDP = loop.rule
    from neuro.rules.stdp import stdp_pair_interval

    if rule.state is None:
        rule.reset(z_in.shape[1], z_in.shape[2], out.shape[2])
    terms, rule.state = stdp_pair_interval(z_in, out, rule.state, rule.params, rule.dt)
    p = rule.params
    w = loop.weight.detach().to(_F64)
    lo, hi = loop.graph.projections[loop.model.plastic].bounds
    active = (terms.z_pre.any(-1) | terms.z_post.any(-1)).any(-1).nonzero().squeeze(-1).tolist()
    for t in active:
        dw = p.a_plus * terms.z_post[t].to(_F64).T @ terms.x_pre[t] - p.a_minus * terms.x_post[
            t
        ].T @ terms.z_pre[t].to(_F64)
        w = storage.quantize((w + dw).clamp(lo, hi))
    with torch.no_grad():
        loop.weight.data.copy_(w.to(loop.weight.dtype))
    return out


# ==================================================================================================
# Scenarios
# ==================================================================================================


def _options(graph: ModelGraph) -> dict:
    return dict(graph.data.options) if graph.data is not None else {}


_OWN_KEYS = (
    "update_interval",
    "trials",
    "snapshots",
    "normalise",
    "normalise_norm",
    "label_samples",
    "rewarded",
    "reward",
    "reward_window",
    "reward_delay",
    "naive_rounding",
    "rounding",
    "min_spikes",
    "rate_step",
    "max_presentations",
    "lateral_self",
)


def _run_poisson(
    graph,
    network,
    loop: ClosedLoop,
    opts: dict,
    seed: int,
    epochs: int,
    progress: bool,
    naive: PositFormat | None = None,
    reward_fn=None,
):
    """Poisson inputs at the encoding's rate for the model's duration x epochs; weight snapshots."""
    from tqdm.auto import tqdm

    inp = graph.populations[loop.model.source]
    enc = graph.encodings[inp.name]
    rate = float(enc.rate if enc.rate is not None else enc.max_rate)
    trials = int(opts.get("trials", 1))
    interval = max(1, round(_time(opts.get("update_interval"), 10e-3) / graph.dt))
    chunk_steps = max(interval, (round(0.5 / graph.dt) // interval) * interval)
    total = graph.steps * epochs
    n_snap = int(opts.get("snapshots", 50))
    snap_every = max(1, total // max(1, n_snap))
    loop.reset(trials)
    snapshots, snap_t = [loop.weight.detach().to(_F64).clone()], [0.0]
    n_chunks = math.ceil(total / chunk_steps)
    bar = tqdm(range(n_chunks), desc=graph.name, disable=not progress, leave=False)
    step = 0
    for c in bar:
        length = min(chunk_steps, total - c * chunk_steps)
        z = torch.stack(
            [poisson_chunk(rate, inp.size, length, graph.dt, seed, b, c) for b in range(trials)], 1
        )
        for start in range(0, length, interval):
            zi = z[start : start + interval]
            if naive is not None:
                naive_pair_interval(loop, zi, naive)
            else:
                loop.run_interval(zi, reward=reward_fn)
            before = step
            step += zi.shape[0]
            if step // snap_every != before // snap_every or step == total:
                snapshots.append(loop.weight.detach().to(_F64).clone())
                snap_t.append(step * graph.dt)
    return torch.stack(snapshots), snap_t, trials


def song_metrics(w: torch.Tensor, g_max: float) -> dict:
    """Shares of weights below 10% and above 90% of ``g_max``."""
    w = w.reshape(-1).to(_F64)
    return {
        "share_below_10pct": float((w < 0.1 * g_max).double().mean()),
        "share_above_90pct": float((w > 0.9 * g_max).double().mean()),
    }


class DistalReward:
    """Izhikevich 2007 reward schedule: a post spike within ``window`` after a pre spike of the
    rewarded synapse earns ``amount`` of dopamine ``delay`` (uniform in [lo, hi]) later.  Delays come
    from a counter-based stream per (seed, trial, event number)."""

    def __init__(
        self,
        dt: float,
        rewarded: int,
        amount: float,
        window: float,
        delay: tuple[float, float],
        seed: int,
        trials: int,
    ):
        self.dt, self.rewarded, self.amount = dt, rewarded, amount
        self.window = max(1, round(window / dt))
        self.delay = (round(delay[0] / dt), round(delay[1] / dt))
        self.seed = seed
        self.now = 0
        self.last_pre = [-(10**9)] * trials
        self.pending: list[list[int]] = [[] for _ in range(trials)]
        self.events = [0] * trials
        self.rewards = 0

    @classmethod
    def from_options(cls, dt: float, opts: dict, seed: int, trials: int) -> DistalReward:
        """The schedule a model file's ``[data]`` options describe (``rewarded``, ``reward``,
        ``reward_window``, ``reward_delay``; Izhikevich's defaults: 0.5, 10 ms, 1-3 s)."""
        delay = opts.get("reward_delay", ["1 s", "3 s"])
        return cls(
            dt,
            int(opts.get("rewarded", 0)),
            float(opts.get("reward", 0.5)),
            _time(opts.get("reward_window"), 10e-3),
            (_time(delay[0], 1.0), _time(delay[1], 3.0)),
            seed,
            trials,
        )

    def __call__(self, z_in: torch.Tensor, z_out: torch.Tensor) -> torch.Tensor:
        from neuro.data import sample_generator

        length, batch = z_in.shape[:2]
        release = torch.zeros(length, batch, dtype=_F64)
        pre = z_in[:, :, self.rewarded]
        post = z_out.any(-1)
        for b in range(batch):
            # deliveries due inside this interval
            keep = []
            for due in self.pending[b]:
                if due < self.now + length:
                    release[due - self.now, b] += self.amount
                else:
                    keep.append(due)
            self.pending[b] = keep
            pre_t = pre[:, b].nonzero().squeeze(-1).tolist()
            post_t = post[:, b].nonzero().squeeze(-1).tolist()
            j = 0
            last = self.last_pre[b]
            for t in sorted(set(pre_t) | set(post_t)):
                if t in pre_t:
                    last = self.now + t
                if t in post_t and 0 <= self.now + t - last <= self.window:
                    gen = sample_generator(self.seed, "distal_reward", b, self.events[b])
                    d = int(torch.randint(self.delay[0], self.delay[1] + 1, (1,), generator=gen))
                    self.pending[b].append(self.now + t + d)
                    self.events[b] += 1
                    self.rewards += 1
                    last = -(10**9)  # one reward per pre spike
                j += 1
            self.last_pre[b] = last
        self.now += length
        return release


# ==================================================================================================
# Digits (Diehl & Cook 2015 style)
# ==================================================================================================


def _digits_run(
    loop: ClosedLoop,
    dataset,
    graph,
    encoder,
    epoch: int,
    batch: int,
    *,
    learn: bool,
    interval: int,
    normalise: tuple[float, str] | None,
    theta: torch.Tensor,
    order=None,
    progress=False,
    desc="",
    retry: tuple[int, float, int] = (0, 0.0, 1),
):
    """Present every sample of ``dataset`` (in ``order``), ``batch`` at a time; return spike counts
    ``(S, M)`` and the adaptive thresholds after the pass.

    ``retry = (min_spikes, rate_step_hz, max_presentations)``: a sample that drew fewer than
    ``min_spikes`` output spikes is presented again (state at rest, thresholds kept) with its
    Poisson rate raised by ``rate_step_hz``, up to ``max_presentations`` times (Diehl & Cook 2015);
    its counts are those of the last presentation."""
    from dataclasses import replace

    from tqdm.auto import tqdm

    min_spikes, rate_step, tries = retry
    n = len(dataset)
    order = torch.arange(n) if order is None else order
    counts = torch.zeros(n, loop.pop.size, dtype=torch.int64)
    bar = tqdm(range(0, n, batch), desc=desc, disable=not progress, leave=False)
    for start in bar:
        idx = order[start : start + batch]
        for attempt in range(tries):
            enc = (
                encoder
                if attempt == 0
                else replace(encoder, max_rate_hz=encoder.max_rate_hz + attempt * rate_step)
            )
            x = dataset.encode(idx, epoch + 1000 * attempt, graph.steps, graph.dt, encoder=enc) > 0
            if learn and normalise:
                from neuro.rules.homeostasis import normalisation_contribute

                normalisation_contribute(loop.engine, loop.weight, *normalise)
                loop.engine.step()
            loop.reset(len(idx), theta)
            th0 = loop.state.theta.clone()
            c = torch.zeros(len(idx), loop.pop.size, dtype=torch.int64)
            for s in range(0, graph.steps, interval):
                out = loop.run_interval(x[s : s + interval], learn=learn)
                c += out.sum(0)
            counts[idx] = c
            if learn and loop.pop.type == "AdaptiveLIF":
                theta = theta + (loop.state.theta - th0).sum(0).to(theta.dtype)
            idx = idx[c.sum(1) < min_spikes]
            if idx.numel() == 0:
                break
    return counts, theta


def assign_labels(counts: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    """Each neuron's class: the one for which its mean spike count is highest (``(M,)``)."""
    rates = torch.stack(
        [
            counts[labels == k].double().mean(0)
            if bool((labels == k).any())
            else torch.zeros(counts.shape[1], dtype=_F64)
            for k in range(classes)
        ]
    )
    return rates.argmax(0)


def predict(counts: torch.Tensor, assignment: torch.Tensor, classes: int) -> torch.Tensor:
    """Class with the highest mean spike count over its assigned neurons (``(S,)``)."""
    scores = torch.stack(
        [
            counts[:, assignment == k].double().mean(1)
            if bool((assignment == k).any())
            else torch.zeros(counts.shape[0], dtype=_F64)
            for k in range(classes)
        ],
        1,
    )
    return scores.argmax(1)


# ==================================================================================================
# train_local
# ==================================================================================================


def train_local(
    graph: ModelGraph,
    *,
    epochs: int | None = None,
    seed: int | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    max_train: int | None = None,
    rounding: str | None = None,
    naive_rounding: bool | None = None,
):
    """Train a local-rule model (the ``neuro train`` entry point for STDP-family models).

    Args:
        graph: a model graph with one plastic local-rule projection (see :class:`LocalModel`).
        epochs, seed: override the model file's ``[training]`` values (poisson scenarios run
            ``duration x epochs``).
        out_dir: where ``metrics.json``, ``weights.safetensors``, ``model.toml`` and figures go.
        progress: progress bars.
        max_train: use only the first ``max_train`` training samples (digits).
        rounding: ``"nearest"`` or ``"stochastic"`` rounding of the engine's once-per-interval step
            (default: the ``[data]`` option ``rounding``, else nearest).
        naive_rounding: bypass the engine and round the weights to storage after every time step
            (the baseline for the low-precision experiments; additive pair STDP only).
    Returns:
        :class:`neuro.train.loop.TrainResult`.
    """
    from neuro.train.loop import TrainResult, weights_digest

    t0 = time.perf_counter()
    spec = graph.training
    epochs = spec.epochs if epochs is None else int(epochs)
    seed = spec.seed if seed is None else int(seed)
    opts = _options(graph)
    rounding = rounding or opts.get("rounding", "nearest")
    naive_rounding = bool(opts.get("naive_rounding", False)) if naive_rounding is None else naive_rounding
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = LocalModel.from_graph(graph)
        proj = graph.projections[model.plastic]
        wide = proj.format in ("float64", "posit32", "bposit16", "bposit32")
        network = Network(graph, seed=seed, dtype=_F64 if wide or proj.format != "float32" else torch.float32)
        engine = local_engine(graph, network, [model.plastic], rounding=rounding, seed=seed)
        rule = rule_for(graph, model.plastic)
        loop = ClosedLoop(graph, network, engine, rule)
        metrics = {
            "model": graph.name,
            "model_hash": graph.canonical_hash(),
            "format": sorted({p.format for p in graph.projections.values()}),
            "rule": proj.rule,
            "epochs": epochs,
            "seed": seed,
            "rounding": rounding,
            "naive_rounding": naive_rounding,
            "dt_s": graph.dt,
            "train_accuracy": math.nan,
            "test_accuracy": math.nan,
        }
        history: dict = {}
        figures = []
        data = graph.data.name if graph.data is not None else "poisson_scenario"
        interval_s = _time(opts.get("update_interval"), 10e-3)
        metrics["update_interval_s"] = interval_s
        if data == "poisson_scenario":
            naive = None
            if naive_rounding:
                if proj.rule != "stdp_pair" or rule.params.mu != 0.0:
                    raise ValueError("naive_rounding is implemented for additive pair STDP only")
                naive = NAMED_FORMATS.get(proj.format)
                if naive is None:
                    raise ValueError(f"naive_rounding needs a posit storage format, got {proj.format}")
            reward_fn = None
            if proj.rule == "rstdp":
                reward_fn = DistalReward.from_options(graph.dt, opts, seed, int(opts.get("trials", 1)))
            snaps, snap_t, trials = _run_poisson(
                graph, network, loop, opts, seed, epochs, progress, naive, reward_fn
            )
            g_max = proj.bounds[1] if proj.bounds is not None else float(snaps.max())
            w = network.weights[model.plastic].detach().to(_F64)
            sim_s = graph.steps * epochs * graph.dt
            metrics.update(song_metrics(w, g_max))
            metrics.update(
                {
                    "g_max": g_max,
                    "simulated_s": sim_s,
                    "trials": trials,
                    "post_rate_hz": loop.spike_count / (sim_s * trials * loop.pop.size),
                    "mean_weight_over_gmax": float(w.mean() / g_max),
                }
            )
            if reward_fn is not None:
                k = reward_fn.rewarded
                others = torch.cat([w[:, :k], w[:, k + 1 :]], 1)
                metrics.update(
                    {
                        "rewarded_weight": float(w[:, k].mean()),
                        "others_mean": float(others.mean()),
                        "others_max": float(others.max()),
                        "rewards": reward_fn.rewards,
                    }
                )
                history["rewarded_weight"] = snaps[:, :, k].mean(1).tolist()
            history["time_s"] = snap_t
            history["hist_edges"] = torch.linspace(0, g_max, 26).tolist()
            history["hist"] = [torch.histc(s.reshape(-1), bins=25, min=0, max=g_max).tolist() for s in snaps]
            figures.append(("weights_over_time.png", lambda p: plot_weights_over_time(history, p)))
        elif data == "digits":
            _train_digits(
                graph, network, loop, opts, seed, epochs, progress, max_train, metrics, history, interval_s
            )
            figures.append(
                (
                    "receptive_fields.png",
                    lambda p: plot_receptive_fields(network.weights[model.plastic].detach(), p),
                )
            )
            history["hist_edges"] = []
        else:
            raise ValueError(
                f"{graph.name}: the local-rule trainer runs poisson_scenario or digits data, got {data!r}"
            )
        metrics["seconds"] = round(time.perf_counter() - t0, 3)
        metrics["weights_sha256"] = weights_digest(network)
        metrics["history"] = history
        if out_dir is not None:
            write_local_outputs(Path(out_dir), graph, network, metrics, figures)
        return TrainResult(metrics=metrics, network=network, history=history)
    finally:
        torch.set_num_threads(threads)


def _retry_options(name: str, opts: dict) -> tuple[int, float, int]:
    """``(min_spikes, rate_step_hz, max_presentations)`` from the ``[data]`` table, validated."""
    min_spikes = opts.get("min_spikes", 0)
    if isinstance(min_spikes, bool) or not isinstance(min_spikes, int) or min_spikes < 0:
        raise ValueError(f"{name}: data.min_spikes must be an integer >= 0, got {min_spikes!r}")
    tries = opts.get("max_presentations", 10 if min_spikes else 1)
    if isinstance(tries, bool) or not isinstance(tries, int) or tries < 1:
        raise ValueError(f"{name}: data.max_presentations must be an integer >= 1, got {tries!r}")
    step = _time(opts.get("rate_step"), 0.0, "parse_rate")
    if min_spikes and not step > 0:
        raise ValueError(f'{name}: data.min_spikes needs data.rate_step > 0 (e.g. "32 Hz"), got {step!r}')
    return min_spikes, step, tries


def _train_digits(
    graph, network, loop, opts, seed, epochs, progress, max_train, metrics, history, interval_s
):
    from neuro.data import epoch_permutation, load_dataset
    from neuro.train.loop import _encoder

    ds_opts = {k: v for k, v in opts.items() if k not in _OWN_KEYS}
    train_set = load_dataset("digits", "train", **ds_opts)
    test_set = load_dataset("digits", "test", **ds_opts)
    if max_train is not None:
        train_set = train_set.subset(torch.arange(min(max_train, len(train_set))))
    encoder = _encoder(graph)
    interval = max(1, round(interval_s / graph.dt))
    normalise = opts.get("normalise")
    norm = opts.get("normalise_norm", "sum")
    if norm not in ("sum", "euclidean"):
        raise ValueError(f"{graph.name}: data.normalise_norm must be 'sum' or 'euclidean', got {norm!r}")
    normalise = (float(normalise), norm) if normalise else None
    batch = graph.training.batch_size
    retry = _retry_options(graph.name, opts)
    theta = torch.zeros(loop.pop.size, dtype=_F64)
    history.update({"epoch": [], "train_accuracy": [], "test_accuracy": [], "post_rate_hz": []})
    for epoch in range(epochs):
        order = epoch_permutation(len(train_set), seed, epoch)
        loop.spike_count = 0
        _, theta = _digits_run(
            loop,
            train_set,
            graph,
            encoder,
            epoch,
            batch,
            learn=True,
            interval=interval,
            normalise=normalise,
            theta=theta,
            order=order,
            retry=retry,
            progress=progress,
            desc=f"epoch {epoch + 1}/{epochs}",
        )
        rate = loop.spike_count / (len(train_set) * graph.steps * graph.dt * loop.pop.size)
        # label assignment on (a part of) the training set, then test; no learning, thresholds frozen
        n_label = min(len(train_set), int(opts.get("label_samples", len(train_set))))
        label_set = train_set.subset(torch.arange(n_label))
        c_train, _ = _digits_run(
            loop,
            label_set,
            graph,
            encoder,
            epochs + epoch,
            256,
            learn=False,
            interval=graph.steps,
            normalise=None,
            theta=theta,
            retry=retry,
        )
        assignment = assign_labels(c_train, label_set.labels, 10)
        train_acc = float((predict(c_train, assignment, 10) == label_set.labels).double().mean())
        c_test, _ = _digits_run(
            loop,
            test_set,
            graph,
            encoder,
            0,
            256,
            learn=False,
            interval=graph.steps,
            normalise=None,
            theta=theta,
            retry=retry,
        )
        test_acc = float((predict(c_test, assignment, 10) == test_set.labels).double().mean())
        history["epoch"].append(epoch + 1)
        history["train_accuracy"].append(train_acc)
        history["test_accuracy"].append(test_acc)
        history["post_rate_hz"].append(rate)
        if progress:
            print(
                f"epoch {epoch + 1}/{epochs}: train {train_acc:.4f} test {test_acc:.4f} rate {rate:.2f} Hz "
                f"silent test samples {int((c_test.sum(1) == 0).sum())}"
            )
    metrics.update(
        {
            "train_accuracy": history["train_accuracy"][-1],
            "test_accuracy": history["test_accuracy"][-1],
            "neurons": loop.pop.size,
            "train_samples": len(train_set),
            "test_samples": len(test_set),
            "presentation_s": graph.steps * graph.dt,
            "mean_threshold_rise": float(theta.mean()),
            "neurons_per_class": torch.bincount(assignment, minlength=10).tolist(),
            "silent_test_samples": int((c_test.sum(1) == 0).sum()),
            "responsive_neurons": int((c_train.sum(0) > 0).sum()),
        }
    )


# ==================================================================================================
# Outputs and figures
# ==================================================================================================


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_weights_over_time(history: dict, path) -> None:
    """Weight histogram over time (image: time x weight bin, share of synapses) and the final one."""
    plt = _pyplot()
    h = torch.tensor(history["hist"], dtype=_F64)
    h = h / h.sum(1, keepdim=True).clamp(min=1)
    edges = history["hist_edges"]
    t = history["time_s"]
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.4))
    im = ax0.imshow(
        h.T.numpy(), aspect="auto", origin="lower", extent=[t[0], t[-1], edges[0], edges[-1]], cmap="viridis"
    )
    ax0.set_xlabel("time (s)")
    ax0.set_ylabel("weight")
    fig.colorbar(im, ax=ax0, label="share of synapses")
    centers = [(a + b) / 2 for a, b in zip(edges[:-1], edges[1:])]
    ax1.bar(centers, h[-1].numpy(), width=edges[1] - edges[0])
    ax1.set_xlabel("weight")
    ax1.set_ylabel("share of synapses (end)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_receptive_fields(w: torch.Tensor, path, side: int = 8, limit: int = 100) -> None:
    """Input weights of up to ``limit`` neurons as ``side x side`` images."""
    plt = _pyplot()
    w = w[:limit].detach().to(_F64).cpu()
    n = w.shape[0]
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 0.7, rows * 0.7))
    for k, ax in enumerate(axes.reshape(-1) if hasattr(axes, "reshape") else [axes]):
        ax.axis("off")
        if k < n:
            ax.imshow(w[k].reshape(side, side).numpy(), cmap="hot")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def write_local_outputs(out: Path, graph: ModelGraph, network: Network, metrics: dict, figures) -> None:
    """``metrics.json`` (NaN written as null), ``weights.safetensors``, ``model.toml``, figures."""
    from safetensors.torch import save

    from neuro.model.spec import dump_model
    from neuro.train.loop import _atomic_write

    out.mkdir(parents=True, exist_ok=True)
    weights = {name: w.detach().cpu().contiguous() for name, w in network.weights.items()}
    _atomic_write(out / "weights.safetensors", save(weights, metadata={"model_hash": graph.canonical_hash()}))
    _atomic_write(out / "model.toml", dump_model(graph).encode())
    _atomic_write(out / "metrics.json", (json.dumps(_json_safe(metrics), indent=2) + "\n").encode())
    for name, draw in figures:
        draw(out / name)
