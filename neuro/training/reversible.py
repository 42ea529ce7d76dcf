"""Training mode ``reversible``: a graph with a ``[reversible]`` section, trained through the engine
by exact recomputation (:class:`~neuro.sim.reversible_network.ReversibleNetwork`).

Every weight, the block weights included, is bounded to ``|w| <= W_LIMIT`` (the range the
fixed-point grid assumes); ``metrics["side_bytes"]`` is the side records of the last microbatch.
"""

from __future__ import annotations

import torch

from neuro.engine.params import Bounds
from neuro.rules.bptt import classification_loss
from neuro.sim.reversible import W_LIMIT
from neuro.sim.reversible_network import ReversibleNetwork
from neuro.training.engines import build_engine
from neuro.training.loop import Driver

__all__ = ["ReversibleDriver", "reversible_engine"]


def reversible_engine(graph, net: ReversibleNetwork, seed: int = 0):
    """The engine over every weight of ``net`` (projections and blocks, the input projection's
    storage format for the blocks), each bounded to ``|w| <= W_LIMIT``."""
    storage = graph.projections[net.p_in].format
    return build_engine(graph, net.weights, list(net.weights), seed=seed,
                        constraint=Bounds(-W_LIMIT, W_LIMIT), storage=storage)


class ReversibleDriver(Driver):
    """Mode ``reversible`` (see the module docstring)."""

    mode = "reversible"
    preallocate = True

    def __init__(self, graph, run) -> None:
        super().__init__(graph, run)
        self.network = ReversibleNetwork(graph, seed=run.seed)
        self.dtype = self.network.dtype
        self.weights = self.network.weights
        self.trained = list(self.weights)

    def engine(self, seed: int):
        return reversible_engine(self.graph, self.network, seed)

    def microbatch(self, x, labels, engine, scale):
        scores = self.network.train_scores(x, engine, scale)
        loss = classification_loss(scores, labels)
        loss.backward()
        return scores, float(loss.detach())

    @torch.no_grad()
    def scores(self, x):
        return self.network.scores(x)

    def metrics(self) -> dict:
        return {"mode": self.mode}

    def finish(self, metrics: dict) -> None:
        metrics["side_bytes"] = getattr(self.network, "last_side_bytes", 0)
