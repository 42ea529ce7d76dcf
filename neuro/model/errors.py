"""The model layer's two errors and its hints (the nearest valid name, common aliases).

* :class:`GraphError` -- a :class:`~neuro.model.graph.ModelGraph` (built from a file or in code)
  breaks an invariant; it names the key in model-file terms (``projections.hidden_out.target``).
* :class:`ModelFileError` -- a model file (or dict) is invalid; it adds the file name and, for TOML
  syntax errors, the line and column.  The reader turns every GraphError into one.
* :func:`suggest` -- the hint for a word that is not one of the valid choices: a known alias first
  (:data:`ALIASES`: ``batch`` -> ``batch_size``, ``backprop`` -> ``bptt``, ``rate`` -> ``poisson``),
  then a case- or spelling-insensitive match, then the nearest spelling (difflib).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["ALIASES", "GraphError", "ModelFileError", "did_you_mean", "nearest", "suggest"]


class GraphError(ValueError):
    """A model graph violates an invariant (unknown endpoint, non-square recurrent weight, ...).

    Attributes:
        key: dotted path of the offending entry in model-file terms, e.g.
            ``"projections.hidden_out.target"`` or ``"model.dt"``.
        expected: what a valid value looks like.
        found: what was found.
        hint: how to fix it, or None.
    """

    def __init__(self, key: str, expected: str, found: str, hint: str | None = None) -> None:
        self.key, self.expected, self.found, self.hint = key, expected, found, hint
        message = f"{key}: expected {expected}, found {found}"
        if hint:
            message += f" (hint: {hint})"
        super().__init__(message)


class ModelFileError(ValueError):
    """A model file (or model dict) is invalid.

    The message names the file, the key path (``populations.hidden.tau_mem``), what was expected,
    what was found and, where one helps, a hint (the nearest valid key, the unit to write).

    Attributes:
        source: the file name, or ``"<string>"`` / ``"<dict>"``.
        key: dotted key path, or None for errors that concern the whole file (TOML syntax).
        expected, found: what a valid value looks like, and what was there.
        hint: how to fix it, or None.
        line, column: 1-based position of a TOML syntax error, else None.
    """

    def __init__(
        self,
        source: str,
        key: str | None,
        expected: str,
        found: str,
        hint: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.source, self.key, self.expected, self.found = source, key, expected, found
        self.hint, self.line, self.column = hint, line, column
        where = source
        if line is not None:
            where += f":{line}" + (f":{column}" if column is not None else "")
        if key:
            where += f": {key}"
        message = f"{where}: expected {expected}, found {found}"
        if hint:
            message += f"\n  hint: {hint}"
        super().__init__(message)


#: Words people write for a model-file key or value: valid name -> what they write instead.  A hint
#: names the valid name only where it is valid (``rate`` means ``poisson`` as an encoding; as a key
#: of a poisson encoding it is right as it is).  Compared after lower-casing, with ``-`` and spaces
#: read as ``_``.
ALIASES: dict[str, tuple[str, ...]] = {
    # [training]
    "batch_size": ("batch", "batchsize", "batch_sz", "bs", "minibatch", "mini_batch"),
    "microbatch": ("micro_batch", "micro_batch_size", "microbatch_size"),
    "learning_rate": ("lr", "learningrate", "eta", "step_size"),
    "epochs": ("epoch", "n_epochs", "num_epochs", "nepochs"),
    "seed": ("seeds", "random_seed", "rng_seed"),
    "lr_schedule": ("schedule", "lr_scheduler", "scheduler"),
    "rate_regularisation": ("rate_regularization", "regularisation", "regularization", "rate_reg"),
    "readout": ("decoder", "decoding"),
    "loss": ("objective", "loss_fn", "criterion"),
    "cross_entropy": ("ce", "crossentropy", "xent", "cross_entropy_loss", "nll"),
    "max_membrane": ("membrane", "max_voltage", "max_v", "voltage"),
    "spike_count": ("count", "spikes", "rate_coding", "spike_rate"),
    "first_spike": ("ttfs", "time_to_first_spike", "latency"),
    # [model]
    "dt": ("timestep", "time_step", "step", "delta_t"),
    "duration": ("length", "sim_time", "time", "t_sim", "t_end", "steps"),
    "output": ("readout", "output_population", "out"),
    # [populations.P]
    "tau_mem": ("tau", "tau_m", "tau_membrane", "membrane_tau", "tau_v"),
    "tau_syn": ("tau_s", "tau_i", "tau_synapse", "tau_current", "synaptic_tau"),
    "v_th": ("threshold", "vth", "v_thresh", "v_threshold", "theta"),
    "v_reset": ("vreset", "reset", "v_r"),
    "v_leak": ("vleak", "leak", "v_rest", "rest", "v_l"),
    "refractory": ("refractory_period", "t_ref", "tau_ref", "refractoriness", "ref"),
    "adapt_increment": ("beta", "adaptation", "adapt", "threshold_increment"),
    "tau_adapt": ("tau_a", "tau_adaptation", "tau_threshold"),
    "size": ("n", "neurons", "n_neurons", "num_neurons", "count", "units", "shape"),
    "type": ("neuron", "neuron_type", "cell", "model"),
    "AdaptiveLIF": ("alif", "lsnn", "adaptive", "adaptive_lif", "adex"),
    "LIFBox": ("lif_box", "box", "lifbox"),
    "LI": ("leaky_integrator", "integrator", "readout_neuron"),
    "input": ("inputs", "source", "spike_source", "poisson_input"),
    # [projections.J]
    "source": ("from", "pre", "src", "presynaptic"),
    "target": ("to", "post", "tgt", "dst", "postsynaptic"),
    "init": ("weights", "weight", "w", "w0", "initial", "initial_weights", "initialisation"),
    "format": ("dtype", "storage", "precision", "number_format"),
    "rule": ("learning_rule", "plasticity", "learning", "learn", "update"),
    "rule_params": ("params", "parameters", "rule_parameters", "rule_args"),
    "bounds": ("clip", "range", "limits", "w_bounds"),
    "dense": ("full", "all_to_all", "linear", "fc", "fully_connected"),
    "recurrent": ("lateral", "self", "recurrence"),
    "one_to_one": ("diagonal", "identity", "onetoone", "1to1"),
    "bptt": ("backprop", "backpropagation", "bp", "surrogate", "surrogate_gradient", "gradient"),
    "eprop": ("e_prop",),
    "stdp_pair": ("stdp", "pair_stdp"),
    "stdp_triplet": ("triplet", "triplet_stdp"),
    "rstdp": ("r_stdp", "reward_stdp", "reward", "dopamine", "three_factor"),
    "none": ("fixed", "static", "frozen", "off"),
    "normal": ("gaussian", "gauss", "randn"),
    "uniform": ("rand", "flat"),
    "constant": ("const", "fixed", "value"),
    "float32": ("float", "fp32", "single", "f32"),
    "float64": ("double", "fp64", "f64"),
    "excitatory": ("exc", "positive", "e"),
    "inhibitory": ("inh", "negative", "i"),
    # [inputs.P]
    "encoding": ("encoder", "code", "coding"),
    "poisson": ("rate", "rates", "rate_code", "rate_coding", "poisson_rate"),
    "latency": ("ttfs", "time_to_first_spike", "temporal", "first_spike"),
    "current": ("direct", "analog", "analogue", "constant_current", "dc"),
    "max_rate": ("rate_max", "maxrate", "peak_rate"),
    # [data]
    "yinyang": ("yin_yang",),
}  # fmt: skip


def _fold(word: str) -> str:
    return word.strip().lower().replace("-", "_").replace(" ", "_")


def suggest(
    word: object, choices: Iterable[str], cutoff: float = 0.6, spelling: bool = True
) -> str | None:
    """The valid choice ``word`` most likely means, or None.

    In order: an alias of a choice (:data:`ALIASES`), a choice equal to ``word`` up to case, ``-``
    and spaces, and (``spelling``) the nearest spelling (difflib ratio >= ``cutoff``).
    """
    if not isinstance(word, str):
        return None
    choices = [c for c in choices if isinstance(c, str)]
    folded = _fold(word)
    for choice in choices:
        if folded in ALIASES.get(choice, ()):
            return choice
    for choice in choices:
        if _fold(choice) == folded:
            return choice
    if not spelling:
        return None
    close = difflib.get_close_matches(word, choices, n=1, cutoff=cutoff)
    return close[0] if close else None


def did_you_mean(
    word: object, choices: Iterable[str], cutoff: float = 0.6, spelling: bool = True
) -> str | None:
    """``"did you mean 'x'?"`` for :func:`suggest`'s answer, or None."""
    near = suggest(word, choices, cutoff, spelling)
    return f"did you mean {near!r}?" if near else None


def nearest(word: object, names: Iterable[str]) -> str | None:
    """The closest of ``names`` (populations, projections: user-chosen names) to ``word``."""
    if not isinstance(word, str):
        return None
    close = difflib.get_close_matches(word, list(names), n=1, cutoff=0.5)
    return close[0] if close else None
