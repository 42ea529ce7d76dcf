"""Mode ``local``: local-rule models (STDP family) trained in a closed loop through the engine.

A local-rule model is one input population (Poisson or a data set's encoding) projecting onto one
spiking population (LIF or AdaptiveLIF) through a plastic projection whose rule is local
(:func:`neuro.rules.registry.rules_of_kind`), optionally with a fixed recurrent projection on the
target (lateral inhibition).  The simulation is closed-loop: the plastic weights drive the neuron,
the neuron's spikes drive the rule, and the rule's contributions change the weights.

Update intervals
    Time is cut into update intervals of ``L`` steps.  Within an interval the weights are constant,
    so the feed-forward currents of all ``L`` steps are one matrix product, the neuron runs its
    (sequential) LIF recursion, the rule computes its traces for the whole interval in closed form
    and hands its contributions to the engine, and the engine rounds ONCE per interval to the
    storage format and clamps to the bounds (``update_interval = dt`` rounds after every step, as
    naive low-precision hardware would).  The loop itself is :class:`neuro.sim.plastic.ClosedLoop`
    (neurons stepped by :func:`neuro.neurons.lif_step_events`).

:class:`LocalDriver` runs in the one loop (:func:`neuro.training.loop.fit`): a Poisson scenario is a
data set of one sample per epoch (the model's duration of input, chunk by chunk), a digits model
presents one sample per microbatch (:mod:`neuro.training.protocols`).  Local rules are sequential in
time, so the driver is ``replicated`` across workers (see :mod:`neuro.training.loop`).

Metrics (``metrics.json``): ``test_accuracy`` / ``train_accuracy`` (null where no classification is
made), ``seconds``, ``weights_sha256``; Song scenarios ``share_below_10pct`` and
``share_above_90pct`` of ``g_max``; digits the label-assignment accuracies; distal reward
``rewarded_weight`` and ``others_mean``.
"""

from __future__ import annotations

import math

import torch

from neuro.model.graph import ModelGraph
from neuro.model.settings import SCENARIOS
from neuro.rules import registry
from neuro.sim.network import Network
from neuro.sim.plastic import ClosedLoop, LocalModel
from neuro.training.checkpoint import flatten_named, restore_named
from neuro.training.data import load_split
from neuro.training.loop import Driver
from neuro.training.protocols import (
    PROTOCOL_KEYS,
    DistalReward,
    assign_labels,
    count_spikes,
    option_seconds,
    poisson_chunk,
    predict,
    present_digits,
    retry_options,
    song_metrics,
)

__all__ = ["LocalDriver", "Scenario", "rule_for"]

_F64 = torch.float64


def _options(graph: ModelGraph) -> dict:
    return dict(graph.data.options) if graph.data is not None else {}


def rule_for(graph: ModelGraph, name: str):
    """The local rule object of a projection, built by its registry entry (``Rule.build``)."""
    rule = registry.get(graph.projections[name].rule)
    if rule.kind != "local":
        raise ValueError(f"{graph.name}: projection {name} has rule {rule.name!r}, not a local rule "
                         f"{registry.rules_of_kind('local')}")
    return rule.build(graph, name)


# ==================================================================================================
# The driver
# ==================================================================================================


class Scenario:
    """A Poisson input scenario as a data set: the chunks of an epoch (each ``chunk_steps(graph)``
    steps, whole update intervals; the last may be shorter), presented in order, no labels."""

    name, split = SCENARIOS[0], "train"

    def __init__(self, graph: ModelGraph) -> None:
        self.chunk = chunk_steps(graph)
        self.labels = torch.zeros(math.ceil(graph.steps / self.chunk), dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.labels)


def interval_steps(graph: ModelGraph) -> int:
    """Steps per update interval (``[data] update_interval``, default 10 ms)."""
    return max(1, round(option_seconds(_options(graph).get("update_interval"), 10e-3) / graph.dt))


def chunk_steps(graph: ModelGraph) -> int:
    """Steps per chunk of a scenario's input: whole update intervals, about 0.5 s."""
    interval = interval_steps(graph)
    return max(interval, (round(0.5 / graph.dt) // interval) * interval)


class LocalDriver(Driver):
    """Mode ``local`` (see the module docstring)."""

    mode = "local"
    local = True
    replicated = True

    @staticmethod
    def splits(graph: ModelGraph, max_train: int | None):
        """``(train, test)``: the scenario (no test set), or the digits splits."""
        if graph.data is None or graph.data.name in SCENARIOS:
            spec = graph.training
            if spec.batch_size != 1 or spec.microbatch != 1:
                raise ValueError(f"{graph.name}: a poisson_scenario runs its chunks in order: set "
                                 "training.batch_size = 1 and training.microbatch = 1")
            return Scenario(graph), None
        if graph.data.name != "digits":
            raise ValueError(f"{graph.name}: the local-rule trainer runs poisson_scenario or digits data, "
                             f"got {graph.data.name!r}")
        return (load_split(graph, "train", max_samples=max_train, ignore=PROTOCOL_KEYS),
                load_split(graph, "test", ignore=PROTOCOL_KEYS))

    def __init__(self, graph: ModelGraph, run) -> None:
        super().__init__(graph, run)
        self.model = LocalModel.from_graph(graph)
        self.proj = graph.projections[self.model.plastic]
        self.opts = _options(graph)
        self.rounding = self.opts.get("rounding", "nearest")
        self.dtype = torch.float32 if self.proj.format == "float32" else _F64
        self.network = Network(graph, seed=run.seed, dtype=self.dtype)
        self.weights = dict(self.network.weights)
        self.trained = [self.model.plastic]
        self.loop = ClosedLoop(graph, self.network, None, rule_for(graph, self.model.plastic))
        self.interval = interval_steps(graph)
        self.progress = False
        self.extra_history: dict = {}
        if isinstance(run.train_set, Scenario):
            self._start_scenario()
        else:
            self._start_digits()

    def encode(self, dataset, idx, epoch):
        return idx, epoch  # the protocols encode (and re-encode) their own inputs

    def order(self, n: int, seed: int, epoch: int) -> torch.Tensor:
        return torch.arange(n) if self.scenario else super().order(n, seed, epoch)

    def metrics(self) -> dict:
        return {"mode": self.mode, "rule": self.proj.rule, "rounding": self.rounding, "dt_s": self.graph.dt,
                "update_interval_s": option_seconds(self.opts.get("update_interval"), 10e-3)}

    def microbatch(self, x, labels, engine, scale):
        idx, epoch = x
        self.loop.engine = engine
        if self.scenario:
            for c in idx.tolist():
                self._scenario_chunk(epoch, c)
        else:
            _, self.theta = present_digits(self.loop, self.run.train_set, idx, epoch, self.theta,
                                           learn=True, interval=self.interval, normalise=self.normalise,
                                           retry=self.retry)
        return None, 0.0

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict]:
        """Digits: the adaptive thresholds; scenarios: the closed loop's neuron state and spikes, the
        rule's traces, the weight snapshots and the reward schedule; both: the spike count."""
        meta = {"spike_count": self.loop.spike_count, "extra_history": self.extra_history}
        if not self.scenario:
            return {"theta": self.theta.clone()}, meta
        tensors = {"snapshots": torch.stack(self.snapshots), **flatten_named("loop", self.loop.state)}
        rule_state = getattr(self.loop.rule, "state", None)  # a rule's traces (LocalRule.state)
        if rule_state is not None:
            tensors.update(flatten_named("rule", rule_state))
        meta.update(snap_t=self.snap_t, step_count=self.step_count, rule_state=rule_state is not None,
                    reward=self.reward.state_dict() if self.reward is not None else None)
        return tensors, meta

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        self.loop.spike_count, self.extra_history = meta["spike_count"], meta["extra_history"]
        if not self.scenario:
            self.theta = tensors["theta"]
            return
        self.snapshots = list(tensors["snapshots"].unbind(0))
        self.snap_t, self.step_count = meta["snap_t"], meta["step_count"]
        self.loop.state = restore_named(self.loop.state, "loop", tensors)
        if meta["rule_state"]:
            n_pre, n_post = self.graph.populations[self.model.source].size, self.loop.pop.size
            self.loop.rule.reset(self.trials, n_pre, n_post)
            self.loop.rule.state = restore_named(self.loop.rule.state, "rule", tensors)
        if self.reward is not None:
            self.reward.load_state_dict(meta["reward"])

    # ------------------------------------------------------------------ Poisson scenarios
    def _start_scenario(self) -> None:
        graph, opts = self.graph, self.opts
        self.scenario = True
        inp = graph.populations[self.model.source]
        enc = graph.encodings[inp.name]
        self.rate = float(enc.rate if enc.rate is not None else enc.max_rate)
        self.trials = int(opts.get("trials", 1))
        self.chunk = self.run.train_set.chunk
        self.total = graph.steps * self.run.epochs
        self.snap_every = max(1, self.total // max(1, int(opts.get("snapshots", 50))))
        self.reward = (DistalReward.from_options(graph.dt, opts, self.run.seed, self.trials)
                       if registry.get(self.proj.rule).reward else None)
        self.loop.reset(self.trials)
        self.snapshots, self.snap_t, self.step_count = [self._w()], [0.0], 0

    def _w(self) -> torch.Tensor:
        return self.loop.weight.detach().to(_F64).clone()

    def _scenario_chunk(self, epoch: int, c: int) -> None:
        """Chunk ``c`` of ``epoch``: its Poisson input from the counter-based stream keyed by the
        chunk's index in the whole run, one engine step per update interval, weight snapshots."""
        graph, n = self.graph, self.graph.populations[self.model.source].size
        length = min(self.chunk, graph.steps - c * self.chunk)
        index = epoch * len(self.run.train_set) + c
        z = torch.stack([poisson_chunk(self.rate, n, length, graph.dt, self.run.seed, b, index)
                         for b in range(self.trials)], 1)
        for s in range(0, length, self.interval):
            zi = z[s : s + self.interval]
            self.loop.run_interval(zi, reward=self.reward)
            before = self.step_count
            self.step_count += zi.shape[0]
            crossed = self.step_count // self.snap_every != before // self.snap_every
            if crossed or self.step_count == self.total:
                self.snapshots.append(self._w())
                self.snap_t.append(self.step_count * graph.dt)

    # ------------------------------------------------------------------ digits
    def _start_digits(self) -> None:
        opts, name = self.opts, self.graph.name
        self.scenario = False
        norm = opts.get("normalise_norm", "sum")
        if norm not in ("sum", "euclidean"):
            raise ValueError(f"{name}: data.normalise_norm must be 'sum' or 'euclidean', got {norm!r}")
        self.normalise = (float(opts["normalise"]), norm) if opts.get("normalise") else None
        self.retry = retry_options(name, opts)
        self.theta = torch.zeros(self.loop.pop.size, dtype=_F64)
        self.extra_history = {"post_rate_hz": []}

    def accuracies(self, test_set, epoch: int, running: float) -> tuple[float, float]:
        """Scenario: none (NaN).  Digits: each neuron is assigned the class it answers most on (a part
        of) the training set, with the weights and thresholds frozen; a sample's class is the one
        whose neurons spike most (train: on the assignment set; test)."""
        if self.scenario:
            return math.nan, math.nan
        graph, loop, train_set = self.graph, self.loop, self.run.train_set
        rate = loop.spike_count / (len(train_set) * graph.steps * graph.dt * loop.pop.size)
        self.extra_history["post_rate_hz"].append(rate)
        n_label = min(len(train_set), int(self.opts.get("label_samples", len(train_set))))
        label_set = train_set.subset(torch.arange(n_label))
        c_train = count_spikes(loop, label_set, self.run.epochs + epoch, self.theta, self.retry)
        self.assignment = assign_labels(c_train, label_set.labels, 10)
        train_acc = float((predict(c_train, self.assignment, 10) == label_set.labels).double().mean())
        self.c_test = count_spikes(loop, test_set, 0, self.theta, self.retry)
        test_acc = float((predict(self.c_test, self.assignment, 10) == test_set.labels).double().mean())
        self.responsive = int((c_train.sum(0) > 0).sum())
        if self.progress:
            print(f"epoch {epoch + 1}/{self.run.epochs}: train {train_acc:.4f} test {test_acc:.4f} "
                  f"rate {rate:.2f} Hz silent test samples {int((self.c_test.sum(1) == 0).sum())}")
        loop.spike_count = 0
        return train_acc, test_acc

    # ------------------------------------------------------------------ results
    def finish(self, metrics: dict) -> None:
        history = metrics["history"]
        history.update(self.extra_history)
        if self.scenario:
            self._finish_scenario(metrics, history)
            return
        graph, loop = self.graph, self.loop
        metrics.update({
            "neurons": loop.pop.size,
            "test_samples": len(self.run.test_set),
            "presentation_s": graph.steps * graph.dt,
            "mean_threshold_rise": float(self.theta.mean()),
            "neurons_per_class": torch.bincount(self.assignment, minlength=10).tolist(),
            "silent_test_samples": int((self.c_test.sum(1) == 0).sum()),
            "responsive_neurons": self.responsive,
        })

    def _finish_scenario(self, metrics: dict, history: dict) -> None:
        graph, loop = self.graph, self.loop
        snaps = torch.stack(self.snapshots)
        g_max = self.proj.bounds[1] if self.proj.bounds is not None else float(snaps.max())
        w = self.loop.weight.detach().to(_F64)
        sim_s = graph.steps * self.run.epochs * graph.dt
        metrics.update(song_metrics(w, g_max))
        metrics.update({"g_max": g_max, "simulated_s": sim_s, "trials": self.trials,
                        "post_rate_hz": loop.spike_count / (sim_s * self.trials * loop.pop.size),
                        "mean_weight_over_gmax": float(w.mean() / g_max)})
        if self.reward is not None:
            k = self.reward.rewarded
            others = torch.cat([w[:, :k], w[:, k + 1 :]], 1)
            metrics.update({"rewarded_weight": float(w[:, k].mean()), "others_mean": float(others.mean()),
                            "others_max": float(others.max()), "rewards": self.reward.rewards})
            history["rewarded_weight"] = snaps[:, :, k].mean(1).tolist()
        history["time_s"] = self.snap_t
        history["hist_edges"] = torch.linspace(0, g_max, 26).tolist()
        history["hist"] = [torch.histc(s.reshape(-1), bins=25, min=0, max=g_max).tolist() for s in snaps]

    def figures(self, test_set) -> list:
        from neuro import plot

        if self.scenario:
            history = self.history
            return [("weights_over_time.png", lambda p: plot.weights_over_time(history, self.graph, p))]
        w = self.loop.weight.detach()
        return [("receptive_fields.png", lambda p: plot.receptive_fields(w, self.graph, p))]
