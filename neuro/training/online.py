"""Modes ``eprop`` and ``ottt``: :class:`neuro.rules.online.OnlineLearner` runs each microbatch step
by step and hands the engine its contributions online; memory does not depend on ``T``.  Both train
the model's own objective, the cross-entropy of the max-membrane readout.
"""

from __future__ import annotations

import torch

from neuro.rules.online import OnlineLearner
from neuro.training.bptt import NetworkDriver

__all__ = ["OnlineDriver"]


class OnlineDriver(NetworkDriver):
    """Modes ``eprop`` and ``ottt``: :class:`~neuro.rules.online.OnlineLearner` runs each microbatch
    step by step and hands the engine its contributions online (memory does not grow with ``T``).
    Every loss-based projection is trained; e-prop's ``feedback`` is the first one's."""

    preallocate = True

    def __init__(self, graph, run, *, mode: str) -> None:
        super().__init__(graph, run)
        if graph.training.readout != "max_membrane":
            raise ValueError(f"{graph.name}: training.readout = {graph.training.readout!r}: the online "
                             "modes train the max_membrane readout of an LI output")
        self.mode = mode
        feedback = self.graph.projections[self.trained[0]].params.get("feedback", "symmetric") \
            if self.trained else "symmetric"
        self.learner = OnlineLearner(graph, dict(self.network.weights), batch=graph.training.microbatch,
                                     rule=mode, trained=self.trained, feedback=feedback, dtype=self.dtype,
                                     seed=run.seed)

    @torch.no_grad()
    def microbatch(self, x, labels, engine, scale):
        return self.learner.run(x, labels, engine, scale)
