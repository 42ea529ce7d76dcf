"""A model's data: its splits, encoded with the model's own encoder, time step and duration.

``load_split(graph, "train").encode(idx, epoch)`` gives the spikes (or currents) the model trains
on: the data set carries the model's :class:`~neuro.data.Encoder`, ``dt`` and number of steps as its
defaults, so Python use cannot silently fall back to a data set's own default encoding.
"""

from __future__ import annotations

import torch

from neuro.data import Encoder, load_dataset

__all__ = ["encoder_for", "load_split"]



def encoder_for(graph) -> Encoder | None:
    """The :class:`~neuro.data.Encoder` of the graph's input encoding (None when it has none)."""
    (inp,) = graph.inputs()
    enc = graph.encodings.get(inp.name)
    if enc is None:
        return None
    rate = enc.max_rate if enc.max_rate is not None else enc.rate
    return Encoder(
        kind=enc.kind,
        max_rate_hz=float(rate) if rate is not None else 100.0,
        t_max=enc.t_max,
        tau=enc.tau,
        threshold=float(enc.threshold or 0.0),
        gain=float(enc.gain if enc.gain is not None else 1.0),
        seed=graph.training.seed,
    )


def load_split(graph, split: str, *, max_samples: int | None = None, ignore: tuple[str, ...] = ()):
    """The ``split`` of the graph's ``[data]`` set (``max_samples``: only the first that many),
    encoding with the graph's encoder, ``dt`` and steps by default.  ``ignore``: ``[data]`` keys
    that are not the data set's (a training protocol's options)."""
    if graph.data is None:
        raise ValueError(f"{graph.name}: the model file has no [data] table; training needs a data set")
    options = {k: v for k, v in graph.data.options.items() if k not in ignore}
    data = load_dataset(graph.data.name, split, **options)
    encoder = encoder_for(graph)
    data = data.with_encoder(encoder if encoder is not None else data.encoder, steps=graph.steps, dt=graph.dt)
    if max_samples is not None:
        data = data.subset(torch.arange(min(int(max_samples), len(data))))
    return data
