"""The cross-check layer: our simulation and training code against Brian2, from the same graph.

Modules (each imports only those before it): :mod:`~.inputs` (seeded inputs, a user's raster
file, the initial network), :mod:`~.reference` (the graph as a Brian2 network),
:mod:`~.local` (local-rule models through our closed loop, rule and engine vs Brian2),
:mod:`~.figures` (overlays), :mod:`~.fidelity` (the metrics and :func:`~.fidelity.crosscheck`,
which writes ``fidelity.json``).
"""
