"""Training modes ``bptt`` and ``bptt_checkpoint``: surrogate-gradient BPTT through the engine.

* ``bptt``: the Norse network (:class:`~neuro.sim.network.Network`) runs the whole sequence under
  autograd with ``track=True``; after ``backward`` the error signal of every tracked synaptic
  current and the presynaptic activity go to the engine (:func:`neuro.rules.bptt.bptt_contribute`),
  which sums the ``T x B`` products exactly.
* ``bptt_checkpoint``: the same gradient with the time loop cut into segments of ``segment`` steps
  (default ``ceil(sqrt(T))``) under ``torch.utils.checkpoint``: only the states at segment boundaries
  are kept, a segment's activations are recomputed during the backward pass, and each step's
  ``(dL/dc, pre)`` reaches the engine from inside the backward pass.
"""

from __future__ import annotations

import math

import torch

from neuro.rules.bptt import bptt_contribute, classification_loss, readout_scores
from neuro.sim.network import Network, compute_dtype
from neuro.training.loop import Driver

__all__ = ["BPTTDriver", "CheckpointDriver", "NetworkDriver", "loss_trained", "spiking_sources"]

def spiking_sources(graph, names: list[str]) -> set[str]:
    """The projections among ``names`` whose presynaptic activity is 0/1 spikes."""
    out = set()
    for name in names:
        src = graph.populations[graph.projections[name].source]
        if src.type == "input":
            enc = graph.encodings.get(src.name)
            if enc is not None and enc.spiking:  # 0/1 spikes: the engine's exact spike path
                out.add(name)
        elif src.type != "LI":
            out.add(name)
    return out


class NetworkDriver(Driver):
    """A driver whose weights live in a :class:`Network` (evaluation, figures)."""

    def __init__(self, graph, run, *, device: torch.device | str = "cpu") -> None:
        super().__init__(graph, run)
        self.dtype = compute_dtype(graph)
        self.network = Network(graph, seed=run.seed, dtype=self.dtype, device=device)
        self.weights = dict(self.network.weights)
        self.trained = loss_trained(graph)

    def encode(self, dataset, idx, epoch):
        return dataset.encode(idx, epoch, dtype=self.dtype).to(self.network.device)

    def scores(self, x):
        """Class scores of ``x``; the max-membrane readout of a graph the online learner runs is
        computed step by step, keeping only the current state (memory independent of ``T``)."""
        learner = self._streaming(x.shape[1])
        if learner is not None:
            return learner.run(x)[0]
        return readout_scores(self.network(x).readout, self.graph.training.readout)

    def _streaming(self, batch: int):
        """A forward-only :class:`~neuro.rules.online.OnlineLearner` for ``batch`` samples, or None
        where it does not apply (another readout, a graph it cannot run, a GPU)."""
        from neuro.rules.online import OnlineLearner, check_online_graph

        cache = self.__dict__.setdefault("_learners", {})
        if batch not in cache:
            learner = None
            if self.graph.training.readout == "max_membrane" and self.network.device.type == "cpu":
                try:
                    check_online_graph(self.graph)
                    learner = OnlineLearner(self.graph, dict(self.network.weights), batch=batch, learn=False,
                                            dtype=self.dtype)
                except ValueError:
                    learner = None
            cache[batch] = learner
        return cache[batch]

    def figures(self, test_set) -> list:
        from neuro import plot

        figures = super().figures(test_set)
        with torch.no_grad():
            result = self.network(self.encode(test_set, torch.arange(1), 0), record=True)
            predicted = int(readout_scores(result.readout, self.graph.training.readout).argmax(-1)[0])
        label = int(test_set.labels[0])
        weights = {name: w.detach().cpu() for name, w in self.weights.items()}
        figures.append(("raster.png", lambda p: plot.raster(result, self.graph, p, label=label,
                                                            predicted=predicted)))
        figures.append(("weights_hist.png", lambda p: plot.weights_hist(weights, p, graph=self.graph)))
        return figures


def loss_trained(graph) -> list[str]:
    """Projections whose rule is loss-based (trained by whichever loss-based mode runs)."""
    from neuro.rules import registry

    return [n for n, p in graph.projections.items() if registry.get(p.rule).kind == "loss"]


class BPTTDriver(NetworkDriver):
    """Mode ``bptt`` (see the module docstring)."""

    mode = "bptt"

    def __init__(self, graph, run, *, device="cpu") -> None:
        super().__init__(graph, run, device=device)
        self.spiking = spiking_sources(graph, self.trained)

    def microbatch(self, x, labels, engine, scale):
        spec = self.graph.training
        result = self.network(x, track=True)
        scores = readout_scores(result.readout, spec.readout)
        hidden = {k: v for k, v in result.spikes.items() if self.graph.populations[k].type != "input"}
        loss = classification_loss(scores, labels.to(scores.device), hidden, spec.rate_regularisation)
        loss.backward()
        bptt_contribute(engine, self.network, result, self.trained, scale, self.spiking)
        return scores.detach(), float(loss.detach())


class CheckpointDriver(NetworkDriver):
    """Mode ``bptt_checkpoint`` (see the module docstring)."""

    mode = "bptt_checkpoint"
    preallocate = True

    def __init__(self, graph, run, *, device="cpu", segment: int | None = None) -> None:
        from neuro.sim.checkpointed import CheckpointedBPTT

        super().__init__(graph, run, device=device)
        if graph.training.readout != "max_membrane":
            raise ValueError(f"{graph.name}: training.readout = {graph.training.readout!r}: mode "
                             "bptt_checkpoint trains the max_membrane readout of an LI output")
        segment = segment or math.ceil(math.sqrt(graph.steps))
        self.learner = CheckpointedBPTT(graph, self.network, segment=segment)

    def microbatch(self, x, labels, engine, scale):
        scores = self.learner.run(x, engine, self.trained, scale)
        loss = classification_loss(scores, labels)
        loss.backward()
        for w in self.network.weights.values():
            w.grad = None
        return scores.detach(), float(loss.detach())

    def metrics(self) -> dict:
        return {"mode": self.mode, "segment": self.learner.segment}
