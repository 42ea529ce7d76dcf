"""Training: one entry point (:func:`train`), one loop (:func:`~neuro.train.loop.fit`) that runs
every mode's :class:`~neuro.train.loop.Driver`, one engine builder, one evaluator, one writer.

Modules: :mod:`~neuro.train.run` (``train``), :mod:`~neuro.train.loop` (the loop, the driver
protocol, the evaluator), :mod:`~neuro.train.modes` (mode names), :mod:`~neuro.train.engines` (the
engine builder), :mod:`~neuro.train.outputs` (the run folder), :mod:`~neuro.train.data` (a
model's data splits), one module per driver (:mod:`~neuro.train.bptt`, :mod:`~neuro.train.online`,
:mod:`~neuro.train.reversible`, :mod:`~neuro.train.local`) and :mod:`~neuro.train.plan` (memory
plans).
"""

from neuro.train.modes import MODES

__all__ = ["MODES", "TrainResult", "train"]


def __getattr__(name: str):
    """``train`` and ``TrainResult`` load on first use (``import neuro.train`` stays light)."""
    if name in ("train", "TrainResult"):
        from neuro.train import run

        return getattr(run, name)
    raise AttributeError(f"module 'neuro.train' has no attribute {name!r}")
