"""The ``POST /infer`` request: its keys, its limits, and its input tensor.

A body is a JSON object with exactly one input key and optional settings::

    {"features": [[0.2, 0.3, 0.8, 0.7]]}            B x N (or N) values, encoded with the model's encoding
    {"rates": [100, 0, 50, 10], "seed": 3}          B x N (or N) Poisson rates in Hz
    {"spikes": [[0, 1, 0, 1], ...]}                 T x B x N (or T x N) input activity per step
    "seed": integer (default 0)   "return_spikes": true | false (default false)

:func:`infer_input` checks the limits (:class:`RequestLimits`: samples per request, steps) on the
nested lists' lengths *before* converting or encoding anything, so an oversized request costs only
its JSON parse (the body size itself is checked by the server before it reads the body).  Every
refusal is a :class:`RequestError` that names the key at fault and carries its HTTP status.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["INPUT_KEYS", "OPTION_KEYS", "InferInput", "RequestError", "RequestLimits", "infer_input"]

#: The input keys of an /infer body and the shapes they take (N: the input population's size).
INPUT_KEYS = {"spikes": "T x B x N or T x N", "features": "B x N or N", "rates": "B x N or N"}
#: The optional keys of an /infer body.
OPTION_KEYS = ("seed", "return_spikes")
_SEED_RANGE = (-(1 << 63), 1 << 63)


class RequestError(ValueError):
    """A refused request: ``status`` is the HTTP status (400 malformed, 413 over a limit), ``key``
    the body key at fault (None when the body as a whole is at fault)."""

    def __init__(self, message: str, *, key: str | None = None, status: int = 400) -> None:
        self.key, self.status = key, status
        super().__init__(message)


@dataclass(frozen=True)
class RequestLimits:
    """What one request may ask for.

    Attributes:
        max_body: bytes of the request body (checked from ``Content-Length`` before reading it).
        max_samples: samples (B) per request.
        max_steps: time steps (T) of a ``spikes`` request; None: 100 x the model's steps.
    """

    max_body: int = 16 << 20
    max_samples: int = 256
    max_steps: int | None = None

    def steps_for(self, graph) -> int:
        """The step limit for ``graph``."""
        return 100 * graph.steps if self.max_steps is None else self.max_steps


@dataclass
class InferInput:
    """A checked /infer request: ``x`` (T, B, N) in the network's dtype, the input ``key`` it came
    from, and whether the answer carries the output spikes."""

    x: torch.Tensor
    key: str
    return_spikes: bool


def _nominal_shape(value: Any) -> tuple[int, ...]:
    """The lengths along the first elements of nested lists: O(depth), whatever the body size."""
    dims = []
    while isinstance(value, list):
        dims.append(len(value))
        value = value[0] if value else None
    return tuple(dims)


def _quoted(value: Any) -> str:
    text = repr(value) if not isinstance(value, str) else f'"{value}"'
    return text if len(text) <= 40 else text[:37] + "..."


def _check_keys(body: dict[str, Any]) -> str:
    allowed = (*INPUT_KEYS, *OPTION_KEYS)
    for k in body:
        if k not in allowed:
            near = difflib.get_close_matches(str(k), allowed, n=1)
            hint = f'; did you mean "{near[0]}"?' if near else ""
            raise RequestError(f'unknown key "{k}" (an /infer body has one of "spikes", "features", '
                               f'"rates" and optionally "seed", "return_spikes"){hint}', key=str(k))
    given = [k for k in INPUT_KEYS if k in body]
    if len(given) != 1:
        raise RequestError('send exactly one of "spikes" (T x B x N), "features" (B x N) or "rates" (B x N)'
                           + (f'; got {" and ".join(given)}' if given else ""),
                           key=given[1] if len(given) > 1 else None)
    return given[0]


def _seed(body: dict[str, Any]) -> int:
    seed = body.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not _SEED_RANGE[0] <= seed < _SEED_RANGE[1]:
        raise RequestError(f'"seed" must be an integer in [-2**63, 2**63), got {_quoted(seed)}', key="seed")
    return seed


def _return_spikes(body: dict[str, Any]) -> bool:
    flag = body.get("return_spikes", False)
    if not isinstance(flag, bool):
        raise RequestError(f'"return_spikes" must be true or false, got {_quoted(flag)}', key="return_spikes")
    return flag


def _tensor(value: Any, key: str, dims: tuple[int, ...]) -> torch.Tensor:
    try:
        t = torch.tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
        raise RequestError(f'"{key}": expected a rectangular nested list of numbers ({exc})',
                           key=key) from None
    if t.dim() != len(dims) or tuple(t.shape) != dims:
        raise RequestError(f'"{key}": expected a rectangular nested list of numbers, got rows of '
                           "different lengths", key=key)
    if not bool(torch.isfinite(t).all()):
        raise RequestError(f'"{key}": values must be finite numbers', key=key)
    return t


def infer_input(body: Any, graph, dtype: torch.dtype, limits: RequestLimits) -> InferInput:
    """Check an /infer body against ``graph`` and ``limits`` and build its input (see the module
    docstring).

    Args:
        body: the parsed JSON body.
        graph: the serving version's model graph.
        dtype: the network's dtype.
        limits: samples and steps per request.
    Returns:
        The checked input, ``x`` of shape (T, B, N).
    Raises:
        RequestError: naming the key at fault (status 400, or 413 over a limit).
    """
    from neuro.data import poisson_encode, sample_generator
    from neuro.training.data import encoder_for

    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object, e.g. {\"features\": [[0.2, 0.3, 0.8, 0.7]]}")
    key = _check_keys(body)
    seed, return_spikes = _seed(body), _return_spikes(body)
    (inp,) = graph.inputs()
    value = body[key]
    shape = _nominal_shape(value)
    ranks = (2, 3) if key == "spikes" else (1, 2)
    if len(shape) not in ranks:
        raise RequestError(f'"{key}": expected a {INPUT_KEYS[key]} nested list (N = {inp.size}), got '
                           f"{len(shape)} levels of nesting", key=key)
    samples = 1 if len(shape) == ranks[0] else shape[-2]
    if samples > limits.max_samples:
        raise RequestError(f'"{key}": {samples} samples; at most {limits.max_samples} per request',
                           key=key, status=413)
    if key == "spikes" and shape[0] > limits.steps_for(graph):
        raise RequestError(f'"spikes": {shape[0]} steps; at most {limits.steps_for(graph)} per request',
                           key=key, status=413)
    if samples == 0 or shape[0] == 0:
        raise RequestError(f'"{key}": the request holds no samples', key=key)
    if shape[-1] != inp.size:
        raise RequestError(f'"{key}": expected {inp.size} values per sample (the input population '
                           f'"{inp.name}"), got {shape[-1]}', key=key)
    t = _tensor(value, key, shape)
    if key == "spikes":
        x = t if t.dim() == 3 else t[:, None, :]
        return InferInput(x.to(dtype), key, return_spikes)
    f = t if t.dim() == 2 else t[None]
    if key == "rates":
        if bool((f < 0).any()):
            raise RequestError('"rates": must be >= 0 Hz', key=key)
        x = torch.stack([poisson_encode(s, graph.steps, graph.dt, sample_generator(seed, "serve", i),
                                        dtype=dtype) for i, s in enumerate(f)], dim=1)
        return InferInput(x, key, return_spikes)
    enc = encoder_for(graph)
    if enc is None or enc.kind == "raster":
        raise RequestError(f'"features": the model encodes no features (input "{inp.name}"); send "spikes"',
                           key=key)
    x = torch.stack([enc.encode_sample(s, graph.steps, graph.dt, ("serve", seed, i), dtype=dtype)
                     for i, s in enumerate(f)], dim=1)
    return InferInput(x, key, return_spikes)

