"""The protocols local-rule models are trained with: Poisson input scenarios, Izhikevich's distal
reward schedule, and Diehl & Cook's digit presentations (with re-presentation and label assignment).

Protocol options come from the model file's ``[data]`` table (:data:`PROTOCOL_KEYS`; every other key
there goes to the data set):

* ``update_interval``: e.g. ``"10 ms"`` (default 10 ms): the engine rounds once per interval.
* ``rounding``: ``"nearest"`` (default) or ``"stochastic"``, the engine's rounding to storage.
* ``trials``: independent trials run as a batch (Poisson scenarios, default 1); ``snapshots``: weight
  snapshots kept for the histogram over time (default 50).
* Digits: ``normalise`` (each neuron's input-weight norm, default off) and ``normalise_norm``
  (``"sum"`` / ``"euclidean"``), ``label_samples`` (training samples used for label assignment,
  default all), ``lateral_self`` (the lateral projection inhibits the spiking neuron too, default
  true), and Diehl & Cook's re-presentation: a sample that drew fewer than ``min_spikes`` output
  spikes is shown again with its rate raised by ``rate_step`` (e.g. ``"32 Hz"``), at most
  ``max_presentations`` times (default 10; off by default).
* Distal reward: ``rewarded`` (index of the rewarded synapse, default 0), ``reward`` (dopamine per
  reward, default 0.5), ``reward_window`` ("10 ms": a post spike this soon after a pre spike of the
  rewarded synapse earns a reward), ``reward_delay`` (["1 s", "3 s"], uniform).
"""

from __future__ import annotations

import torch

from neuro.model import spec

__all__ = [
    "PROTOCOL_KEYS",
    "DistalReward",
    "assign_labels",
    "option_seconds",
    "poisson_chunk",
    "predict",
    "count_spikes",
    "present_digits",
    "retry_options",
    "song_metrics",
]

_F64 = torch.float64


#: The ``[data]`` keys of the local-rule protocols (not passed to the data set).
PROTOCOL_KEYS = (
    "update_interval",
    "trials",
    "snapshots",
    "normalise",
    "normalise_norm",
    "label_samples",
    "rewarded",
    "reward",
    "reward_window",
    "reward_delay",
    "rounding",
    "min_spikes",
    "rate_step",
    "max_presentations",
    "lateral_self",
)

def option_seconds(value, default: float, parse: str = "parse_time") -> float:
    """A ``[data]`` option in seconds (``"10 ms"`` or a number); ``parse="parse_rate"`` for Hz."""
    if value is None:
        return default
    if isinstance(value, int | float):
        return float(value)
    return getattr(spec, parse)(str(value))

def poisson_chunk(
    rate_hz: float, n: int, steps: int, dt: float, seed: int, trial: int, chunk: int, epoch: int = 0
) -> torch.Tensor:
    """``(steps, n)`` bool Poisson spikes of one trial's ``chunk``, from the counter-based stream
    ``(seed, "poisson_scenario", epoch, trial, chunk)``: the same whatever batch the trial is in."""
    from neuro.data import sample_generator

    gen = sample_generator(seed, "poisson_scenario", epoch, trial, chunk)
    u = torch.rand((steps, n), generator=gen, dtype=_F64)
    return u < min(1.0, rate_hz * dt)

def song_metrics(w: torch.Tensor, g_max: float) -> dict:
    """Shares of weights below 10% and above 90% of ``g_max``."""
    w = w.reshape(-1).to(_F64)
    return {
        "share_below_10pct": float((w < 0.1 * g_max).double().mean()),
        "share_above_90pct": float((w > 0.9 * g_max).double().mean()),
    }

class DistalReward:
    """Izhikevich 2007 reward schedule: a post spike within ``window`` after a pre spike of the
    rewarded synapse earns ``amount`` of dopamine ``delay`` (uniform in [lo, hi]) later.  Delays come
    from a counter-based stream per (seed, trial, event number)."""

    def __init__(
        self,
        dt: float,
        rewarded: int,
        amount: float,
        window: float,
        delay: tuple[float, float],
        seed: int,
        trials: int,
    ):
        self.dt, self.rewarded, self.amount = dt, rewarded, amount
        self.window = max(1, round(window / dt))
        self.delay = (round(delay[0] / dt), round(delay[1] / dt))
        self.seed = seed
        self.now = 0
        self.last_pre = [-(10**9)] * trials
        self.pending: list[list[int]] = [[] for _ in range(trials)]
        self.events = [0] * trials
        self.rewards = 0

    @classmethod
    def from_options(cls, dt: float, opts: dict, seed: int, trials: int) -> DistalReward:
        """The schedule a model file's ``[data]`` options describe (``rewarded``, ``reward``,
        ``reward_window``, ``reward_delay``; Izhikevich's defaults: 0.5, 10 ms, 1-3 s)."""
        delay = opts.get("reward_delay", ["1 s", "3 s"])
        return cls(
            dt,
            int(opts.get("rewarded", 0)),
            float(opts.get("reward", 0.5)),
            option_seconds(opts.get("reward_window"), 10e-3),
            (option_seconds(delay[0], 1.0), option_seconds(delay[1], 3.0)),
            seed,
            trials,
        )

    def state_dict(self) -> dict:
        """The schedule's position (JSON): time, last rewarded pre spikes, pending deliveries, counts."""
        return {"now": self.now, "last_pre": list(self.last_pre), "pending": [list(p) for p in self.pending],
                "events": list(self.events), "rewards": self.rewards}

    def load_state_dict(self, state: dict) -> None:
        self.now, self.rewards = state["now"], state["rewards"]
        self.last_pre, self.events = list(state["last_pre"]), list(state["events"])
        self.pending = [list(p) for p in state["pending"]]

    def __call__(self, z_in: torch.Tensor, z_out: torch.Tensor) -> torch.Tensor:
        from neuro.data import sample_generator

        length, batch = z_in.shape[:2]
        release = torch.zeros(length, batch, dtype=_F64)
        pre = z_in[:, :, self.rewarded]
        post = z_out.any(-1)
        for b in range(batch):
            # deliveries due inside this interval
            keep = []
            for due in self.pending[b]:
                if due < self.now + length:
                    release[due - self.now, b] += self.amount
                else:
                    keep.append(due)
            self.pending[b] = keep
            pre_t = pre[:, b].nonzero().squeeze(-1).tolist()
            post_t = post[:, b].nonzero().squeeze(-1).tolist()
            j = 0
            last = self.last_pre[b]
            for t in sorted(set(pre_t) | set(post_t)):
                if t in pre_t:
                    last = self.now + t
                if t in post_t and 0 <= self.now + t - last <= self.window:
                    gen = sample_generator(self.seed, "distal_reward", b, self.events[b])
                    d = int(torch.randint(self.delay[0], self.delay[1] + 1, (1,), generator=gen))
                    self.pending[b].append(self.now + t + d)
                    self.events[b] += 1
                    self.rewards += 1
                    last = -(10**9)  # one reward per pre spike
                j += 1
            self.last_pre[b] = last
        self.now += length
        return release

def retry_options(name: str, opts: dict) -> tuple[int, float, int]:
    """``(min_spikes, rate_step_hz, max_presentations)`` from the ``[data]`` table, validated."""
    min_spikes = opts.get("min_spikes", 0)
    if isinstance(min_spikes, bool) or not isinstance(min_spikes, int) or min_spikes < 0:
        raise ValueError(f"{name}: data.min_spikes must be an integer >= 0, got {min_spikes!r}")
    tries = opts.get("max_presentations", 10 if min_spikes else 1)
    if isinstance(tries, bool) or not isinstance(tries, int) or tries < 1:
        raise ValueError(f"{name}: data.max_presentations must be an integer >= 1, got {tries!r}")
    step = option_seconds(opts.get("rate_step"), 0.0, "parse_rate")
    if min_spikes and not step > 0:
        raise ValueError(f'{name}: data.min_spikes needs data.rate_step > 0 (e.g. "32 Hz"), got {step!r}')
    return min_spikes, step, tries

def present_digits(loop, dataset, indices: torch.Tensor, epoch: int, theta: torch.Tensor, *, learn: bool,
                   interval: int, normalise: tuple[float, str] | None = None,
                   retry: tuple[int, float, int] = (0, 0.0, 1)) -> tuple[torch.Tensor, torch.Tensor]:
    """Present the samples ``indices`` of ``dataset`` together (one batch, encoded with the data set's
    encoder in ``epoch``) to the closed loop ``loop``; return their spike counts ``(len(indices),
    M)`` and the adaptive thresholds ``theta`` ``(M,)`` after the presentation.

    ``learn``: the rule learns (the loop's engine steps once per ``interval`` steps), preceded by one
    weight normalisation step when ``normalise = (total, norm)``.  ``retry = (min_spikes,
    rate_step_hz, max_presentations)``: a sample that drew fewer than ``min_spikes`` output spikes
    is presented again (state at rest, thresholds kept) with its Poisson rate raised by
    ``rate_step_hz``, up to ``max_presentations`` times (Diehl & Cook 2015); its counts are those of
    the last presentation."""
    from dataclasses import replace

    from neuro.rules.homeostasis import normalisation_contribute

    min_spikes, rate_step, tries = retry
    steps, encoder = loop.graph.steps, dataset.encoder
    counts = torch.zeros(len(indices), loop.pop.size, dtype=torch.int64)
    idx, place = indices, torch.arange(len(indices))
    for attempt in range(tries):
        louder = encoder.max_rate_hz + attempt * rate_step
        enc = encoder if attempt == 0 else replace(encoder, max_rate_hz=louder)
        x = dataset.encode(idx, epoch + 1000 * attempt, encoder=enc) > 0
        if learn and normalise:
            normalisation_contribute(loop.engine, loop.weight, *normalise)
            loop.engine.step()
        loop.reset(len(idx), theta)
        th0 = loop.state.theta.clone()
        c = torch.zeros(len(idx), loop.pop.size, dtype=torch.int64)
        for s in range(0, steps, interval):
            c += loop.run_interval(x[s : s + interval], learn=learn).sum(0)
        counts[place] = c
        if learn and loop.pop.type == "AdaptiveLIF":
            theta = theta + (loop.state.theta - th0).sum(0).to(theta.dtype)
        again = c.sum(1) < min_spikes
        idx, place = idx[again], place[again]
        if idx.numel() == 0:
            break
    return counts, theta


def count_spikes(loop, dataset, epoch: int, theta: torch.Tensor, retry: tuple[int, float, int],
                 batch: int = 256) -> torch.Tensor:
    """Spike counts ``(S, M)`` of every sample of ``dataset``, ``batch`` at a time, no learning."""
    parts = [present_digits(loop, dataset, torch.arange(s, min(len(dataset), s + batch)), epoch, theta,
                            learn=False, interval=loop.graph.steps, retry=retry)[0]
             for s in range(0, len(dataset), batch)]
    return torch.cat(parts) if parts else torch.zeros(0, loop.pop.size, dtype=torch.int64)


def assign_labels(counts: torch.Tensor, labels: torch.Tensor, classes: int) -> torch.Tensor:
    """Each neuron's class: the one for which its mean spike count is highest (``(M,)``)."""
    rates = torch.stack(
        [
            counts[labels == k].double().mean(0)
            if bool((labels == k).any())
            else torch.zeros(counts.shape[1], dtype=_F64)
            for k in range(classes)
        ]
    )
    return rates.argmax(0)


def predict(counts: torch.Tensor, assignment: torch.Tensor, classes: int) -> torch.Tensor:
    """Class with the highest mean spike count over its assigned neurons (``(S,)``)."""
    scores = torch.stack(
        [
            counts[:, assignment == k].double().mean(1)
            if bool((assignment == k).any())
            else torch.zeros(counts.shape[0], dtype=_F64)
            for k in range(classes)
        ],
        1,
    )
    return scores.argmax(1)
