"""An input encoding: how the data set's features drive an ``input`` population."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from neuro.data import ENCODINGS
from neuro.model.checks import check_choice, check_name, finite
from neuro.model.errors import GraphError

__all__ = ["ENCODINGS", "ENCODING_PARAMETERS", "Encoding"]

#: The parameters of each encoding.
ENCODING_PARAMETERS: dict[str, tuple[str, ...]] = {
    "poisson": ("rate", "max_rate"),
    "latency": ("t_max", "tau", "threshold"),
    "current": ("gain",),
    "spike_times": (),
    "raster": (),
}


@dataclass(frozen=True)
class Encoding:
    """How the data set's features drive an ``input`` population (see :mod:`neuro.data`).

    Features are scaled to [0, 1] by the data set.

    * ``poisson``: each channel fires a Poisson train at ``rate`` hertz (fixed; the features are
      ignored) or at ``feature * max_rate`` hertz; exactly one of the two is set.
    * ``latency``: one spike per channel, larger features earlier.  Linear law (``t_max`` set):
      ``t = t_max * (1 - feature)``; RC law (``tau`` set): ``t = tau * ln(f / (f - threshold))``.
      Exactly one of ``t_max``, ``tau`` is set (seconds).  Features ``<= threshold`` never spike.
    * ``current``: ``gain * feature`` is added to the target's input every time step; no spikes.
    * ``spike_times``: each feature is a spike time as a fraction of the sample duration.
    * ``raster``: the data set's samples already are (time, feature) spike rasters.

    Parameters an encoding does not use are ``None``.
    """

    population: str
    kind: str
    rate: float | None = None
    max_rate: float | None = None
    t_max: float | None = None
    tau: float | None = None
    threshold: float | None = None
    gain: float | None = None

    def __post_init__(self) -> None:
        check_name(self.population, "inputs")
        key = f"inputs.{self.population}"
        check_choice(self.kind, ENCODINGS, f"{key}.encoding")
        wanted = ENCODING_PARAMETERS[self.kind]
        for f in dataclasses.fields(self)[2:]:
            value = getattr(self, f.name)
            if value is None:
                continue
            if f.name not in wanted:
                raise GraphError(
                    f"{key}.{f.name}",
                    f"only {', '.join(wanted) or 'no parameters'} for {self.kind} encoding",
                    repr(value),
                )
            object.__setattr__(self, f.name, finite(value, f"{key}.{f.name}"))
        if self.kind == "poisson":
            if (self.rate is None) == (self.max_rate is None):
                raise GraphError(
                    key,
                    "exactly one of rate, max_rate for poisson encoding",
                    "both" if self.rate is not None else "neither",
                    "rate: fixed rate for every channel; max_rate: rate of a feature equal to 1",
                )
            name = "rate" if self.rate is not None else "max_rate"
            if getattr(self, name) <= 0:
                raise GraphError(f"{key}.{name}", "a rate > 0 Hz", repr(getattr(self, name)))
        elif self.kind == "latency":
            if (self.t_max is None) == (self.tau is None):
                raise GraphError(
                    key,
                    "exactly one of t_max (linear law), tau (RC law) for latency encoding",
                    "both" if self.tau is not None else "neither",
                )
            if self.threshold is None:
                raise GraphError(f"{key}.threshold", "a number", "None")
            name = "t_max" if self.t_max is not None else "tau"
            if getattr(self, name) <= 0:
                raise GraphError(f"{key}.{name}", "a time > 0", repr(getattr(self, name)))
            if self.tau is not None and self.threshold <= 0:
                raise GraphError(
                    f"{key}.threshold",
                    "a threshold > 0 for the RC latency law (tau)",
                    repr(self.threshold),
                )
        elif self.kind == "current" and self.gain is None:
            raise GraphError(f"{key}.gain", "a number (current encoding needs it)", "None")

    @property
    def spiking(self) -> bool:
        """True if the population emits spikes (every encoding but ``current``)."""
        return self.kind != "current"

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form: population, kind and the parameters that are set."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}
