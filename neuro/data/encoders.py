"""Input encoders: values -> spike trains laid out (time, ...) like Norse.

All encoders return float tensors whose first axis is time (``steps`` entries, one per time step
of length ``dt`` seconds); the remaining axes are those of the input, so a (batch, features) input
gives (time, batch, features).  Spikes are 0.0 / 1.0.  Arithmetic is done in float64 and the
result cast to ``dtype`` (float32 unless asked otherwise).

:class:`Encoder` bundles an encoding and its parameters; :meth:`Encoder.encode_sample` encodes ONE
sample with random numbers from that sample's own stream, which is how
:meth:`neuro.data.Dataset.encode` makes spikes independent of batch composition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .streams import sample_generator

__all__ = [
    "ENCODINGS",
    "Encoder",
    "constant_current_encode",
    "latency_encode",
    "poisson_encode",
    "poisson_trains",
    "spike_times_encode",
]

ENCODINGS = ("poisson", "latency", "current", "spike_times", "raster")


def _check_steps(steps: int) -> int:
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    return int(steps)


def _check_dt(dt: float) -> float:
    if not (math.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be a positive number of seconds, got {dt!r}")
    return float(dt)


def poisson_encode(
    rates_hz: torch.Tensor,
    steps: int,
    dt: float,
    generator: torch.Generator | None = None,
    *,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Bernoulli-per-step (discretised Poisson) spike trains.

    In each step of ``dt`` seconds a unit spikes with probability ``clamp(rate * dt, 0, 1)``,
    independently of other steps and units.

    Args:
        rates_hz: firing rates in Hz (spikes per second), any shape ``S``, non-negative, finite.
        steps: number of time steps.
        dt: step length in seconds.
        generator: source of the uniform draws (``steps * prod(S)`` float64 draws, time-major).
            Pass one from :func:`neuro.data.streams.sample_generator` for reproducible spikes.
            ``None`` uses torch's global generator (not reproducible across batchings).
        dtype: dtype of the result.

    Returns:
        (steps, *S) tensor of 0/1 on the device of ``rates_hz``.
    """
    steps = _check_steps(steps)
    dt = _check_dt(dt)
    rates = torch.as_tensor(rates_hz, dtype=torch.float64)
    if not bool(torch.isfinite(rates).all()) or bool((rates < 0).any()):
        raise ValueError("rates_hz must be finite and >= 0 (Hz)")
    gen_device = generator.device if generator is not None else rates.device
    p = (rates.to(gen_device) * dt).clamp_(0.0, 1.0)
    u = torch.rand((steps, *p.shape), generator=generator, dtype=torch.float64, device=gen_device)
    return (u < p).to(dtype=dtype, device=torch.as_tensor(rates_hz).device)


def latency_encode(
    values: torch.Tensor,
    steps: int,
    *,
    dt: float = 1e-3,
    t_max: float | None = None,
    tau: float | None = None,
    threshold: float = 0.0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Time-to-first-spike encoding: at most one spike per unit, larger value -> earlier spike.

    Two laws (choose with ``t_max`` or ``tau``, not both):

    * linear (default): ``t = t_max * (1 - v)`` for ``v > threshold``; values are expected in
      [0, 1] (values above 1 spike at t = 0).  ``t_max`` defaults to ``(steps - 1) * dt``, so
      ``v = 1`` spikes in step 0 and ``v -> 0`` in the last step.
    * RC / first-passage: ``t = tau * ln(v / (v - threshold))`` for ``v > threshold > 0``: the
      time an RC membrane with time constant ``tau`` (seconds) charged by constant input ``v``
      needs to reach ``threshold``.

    The spike goes into step ``floor(t / dt)``; units with ``v <= threshold`` or with
    ``t >= steps * dt`` do not spike.  Both laws are monotone in ``v`` after rounding, so
    ``v1 > v2`` implies ``step1 <= step2``.

    Args:
        values: any shape ``S``, finite.
        steps: number of time steps.
        dt: step length in seconds.
        t_max: latency of a value of 0 (linear law), seconds.
        tau: membrane time constant (RC law), seconds.
        threshold: values at or below it never spike.
        dtype: dtype of the result.

    Returns:
        (steps, *S) tensor of 0/1 with at most one 1 along time.
    """
    steps = _check_steps(steps)
    dt = _check_dt(dt)
    v = torch.as_tensor(values).to(torch.float64)
    if not bool(torch.isfinite(v).all()):
        raise ValueError("values must be finite")
    if t_max is not None and tau is not None:
        raise ValueError("give t_max (linear latency) or tau (RC latency), not both")
    active = v > threshold
    if tau is not None:
        if not (math.isfinite(tau) and tau > 0):
            raise ValueError(f"tau must be a positive number of seconds, got {tau!r}")
        if not threshold > 0:
            raise ValueError("the RC latency law needs threshold > 0")
        safe = torch.where(active, v, torch.full_like(v, 2.0 * threshold))
        t_steps = (tau / dt) * torch.log(safe / (safe - threshold))
    else:
        span = (steps - 1) if t_max is None else float(t_max) / dt
        if not (math.isfinite(span) and span >= 0):
            raise ValueError(f"t_max must be a non-negative number of seconds, got {t_max!r}")
        t_steps = (1.0 - v).clamp_(min=0.0) * span
    k = torch.floor(t_steps)
    active &= k < steps
    k = torch.where(active, k, torch.zeros_like(k)).to(torch.int64)
    out = torch.zeros((steps, *v.shape), dtype=dtype, device=v.device)
    out.scatter_(0, k.unsqueeze(0), active.unsqueeze(0).to(dtype))
    return out


def spike_times_encode(
    fractions: torch.Tensor, steps: int, *, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """One spike per unit at a given fraction of the window (Randman's time code).

    Unit with value ``u`` in [0, 1] spikes in step ``min(floor(u * steps), steps - 1)``; NaN means
    "no spike".  Values outside [0, 1] are an error.

    Args:
        fractions: any shape ``S``; spike time as a fraction of the window ``steps * dt``.
        steps: number of time steps.

    Returns:
        (steps, *S) tensor of 0/1 with at most one 1 along time.
    """
    steps = _check_steps(steps)
    u = torch.as_tensor(fractions).to(torch.float64)
    active = ~torch.isnan(u)
    if bool(((u[active] < 0) | (u[active] > 1)).any()):
        raise ValueError("spike-time fractions must lie in [0, 1] (or be NaN for no spike)")
    k = torch.floor(torch.where(active, u, torch.zeros_like(u)) * steps).clamp_(max=steps - 1)
    out = torch.zeros((steps, *u.shape), dtype=dtype, device=u.device)
    out.scatter_(0, k.to(torch.int64).unsqueeze(0), active.unsqueeze(0).to(dtype))
    return out


def constant_current_encode(
    values: torch.Tensor, steps: int, *, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Constant-current encoding: the value itself, repeated in every step.

    Args:
        values: any shape ``S`` (input currents in the model's units).
        steps: number of time steps.

    Returns:
        (steps, *S) tensor (a copy, not a view).
    """
    steps = _check_steps(steps)
    v = torch.as_tensor(values).to(dtype)
    return v.unsqueeze(0).expand(steps, *v.shape).clone()


def poisson_trains(
    n_inputs: int,
    rate_hz: float | torch.Tensor,
    duration_s: float,
    dt_s: float,
    seed: int,
    *,
    batch: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Independent Poisson spike trains for scenarios (e.g. 1000 inputs at 15 Hz onto one neuron).

    Trial ``b`` draws from its own stream ``sample_generator(seed, "poisson_trains", b)``, so the
    unbatched result equals trial 0 of any batched call with the same arguments.

    Args:
        n_inputs: number of input units.
        rate_hz: rate in Hz, a scalar or an (n_inputs,) tensor.
        duration_s: length in seconds; ``steps = round(duration_s / dt_s)``.
        dt_s: step length in seconds.
        seed: stream seed.
        batch: number of independent trials, or None.
        dtype: dtype of the result.

    Returns:
        (steps, n_inputs) if ``batch`` is None, else (steps, batch, n_inputs); 0/1 values.
    """
    if n_inputs < 0:
        raise ValueError(f"n_inputs must be >= 0, got {n_inputs}")
    dt_s = _check_dt(dt_s)
    if not (math.isfinite(duration_s) and duration_s > 0):
        raise ValueError(f"duration_s must be a positive number of seconds, got {duration_s!r}")
    steps = round(duration_s / dt_s)
    if steps < 1:
        raise ValueError(f"duration_s={duration_s} is shorter than one step of dt_s={dt_s}")
    rates = torch.as_tensor(rate_hz, dtype=torch.float64)
    if rates.ndim == 0:
        rates = rates.expand(n_inputs)
    if rates.shape != (n_inputs,):
        raise ValueError(
            f"rate_hz must be a scalar or of shape ({n_inputs},), got {tuple(rates.shape)}"
        )
    n_trials = 1 if batch is None else int(batch)
    if n_trials < 1:
        raise ValueError(f"batch must be >= 1 or None, got {batch}")
    out = torch.empty((steps, n_trials, n_inputs), dtype=dtype)
    for b in range(n_trials):
        gen = sample_generator(seed, "poisson_trains", b)
        out[:, b, :] = poisson_encode(rates, steps, dt_s, gen, dtype=dtype)
    return out[:, 0, :] if batch is None else out


@dataclass(frozen=True)
class Encoder:
    """How a dataset turns one sample's values into spikes.

    Attributes:
        kind: one of ``ENCODINGS``:
            ``"poisson"`` (rate = value * ``max_rate_hz``), ``"latency"`` (:func:`latency_encode`),
            ``"current"`` (:func:`constant_current_encode`, value * ``gain``),
            ``"spike_times"`` (:func:`spike_times_encode`), ``"raster"`` (the sample already is
            a (T, F) raster; returned as is).
        max_rate_hz: Poisson rate of a value of 1, Hz.
        t_max: linear-latency span in seconds (None: the whole window).
        tau: RC-latency time constant in seconds (None: linear law).
        threshold: latency threshold (values at or below it stay silent).
        gain: factor applied to values for ``"current"``.
        seed: stream seed for the random encodings (Poisson).
    """

    kind: str = "poisson"
    max_rate_hz: float = 100.0
    t_max: float | None = None
    tau: float | None = None
    threshold: float = 0.0
    gain: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ENCODINGS:
            raise ValueError(f"unknown encoding {self.kind!r}; valid: {', '.join(ENCODINGS)}")
        if not (math.isfinite(self.max_rate_hz) and self.max_rate_hz >= 0):
            raise ValueError(f"max_rate_hz must be >= 0 Hz, got {self.max_rate_hz!r}")

    @property
    def is_random(self) -> bool:
        """True if the encoding draws random numbers (and so depends on epoch and seed)."""
        return self.kind == "poisson"

    def encode_sample(
        self,
        sample: torch.Tensor,
        steps: int,
        dt: float,
        stream_keys: tuple[int | str, ...] = (),
        *,
        dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        """Encode ONE sample.

        Args:
            sample: (F,) values, or (T, F) raster for ``kind="raster"``.
            steps: number of time steps T.
            dt: step length in seconds.
            stream_keys: keys after ``self.seed`` that name this sample's random stream, e.g.
                ``("mnist", "train", epoch, index)``.
            dtype: dtype of the result.

        Returns:
            (steps, F) tensor.
        """
        if self.kind == "poisson":
            gen = sample_generator(self.seed, "poisson", *stream_keys)
            return poisson_encode(sample * self.max_rate_hz, steps, dt, gen, dtype=dtype)
        if self.kind == "latency":
            return latency_encode(
                sample, steps, dt=dt, t_max=self.t_max, tau=self.tau,
                threshold=self.threshold, dtype=dtype,
            )
        if self.kind == "current":
            return constant_current_encode(sample.to(torch.float64) * self.gain, steps, dtype=dtype)
        if self.kind == "spike_times":
            return spike_times_encode(sample, steps, dtype=dtype)
        # raster
        if sample.ndim != 2 or sample.shape[0] != steps:
            raise ValueError(
                f"raster samples have shape (T, F) = {tuple(sample.shape)}; steps must be T"
            )
        return sample.to(dtype).clone()
