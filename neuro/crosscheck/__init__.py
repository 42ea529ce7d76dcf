"""The cross-check layer: our simulation and training code against Brian2, from the same graph.

Modules (each imports only those before it): :mod:`~.inputs` (seeded inputs, a user's raster
file, the initial network), :mod:`~.reference` (the graph as a Brian2 network),
:mod:`~.local` (local-rule models through our closed loop, rule and engine vs Brian2),
:mod:`~.figures` (overlays), :mod:`~.fidelity` (the metrics and :func:`~.fidelity.crosscheck`,
which writes ``fidelity.json``).
"""

import sys
import types


class _Callable(types.ModuleType):
    """``neuro.crosscheck(graph, out, ...)`` is :func:`~neuro.crosscheck.fidelity.crosscheck`, the
    public API's name for it, also once this package is imported (which makes ``neuro.crosscheck``
    this module)."""

    def __call__(self, *args, **kwargs):
        from neuro.crosscheck.fidelity import crosscheck

        return crosscheck(*args, **kwargs)


sys.modules[__name__].__class__ = _Callable
