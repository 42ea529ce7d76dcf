"""Training: one entry point (:func:`train`), one loop (:func:`~neuro.training.loop.fit`) that runs
every mode's :class:`~neuro.training.loop.Driver`, one engine builder, one evaluator, one writer.

Modules: :mod:`~neuro.training.run` (``train``), :mod:`~neuro.training.loop` (the loop, the driver
protocol, the evaluator), :mod:`~neuro.training.modes` (mode names), :mod:`~neuro.training.engines` (the
engine builder), :mod:`~neuro.training.outputs` (the run folder), :mod:`~neuro.training.data` (a
model's data splits), one module per driver (:mod:`~neuro.training.bptt`, :mod:`~neuro.training.online`,
:mod:`~neuro.training.reversible`, :mod:`~neuro.training.local`) and :mod:`~neuro.training.plan` (memory
plans).
"""

from neuro.training.modes import MODES

__all__ = ["MODES", "TrainResult", "train"]


def __getattr__(name: str):
    """``train`` and ``TrainResult`` load on first use (``import neuro.training`` stays light)."""
    if name in ("train", "TrainResult"):
        from neuro.training import run

        return getattr(run, name)
    raise AttributeError(f"module 'neuro.training' has no attribute {name!r}")
