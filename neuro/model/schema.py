"""The model-file keys of each table: their kinds, defaults and checks, and :data:`FORMAT_HELP`.

A key is ``(kind, default, check)`` (the rule registry's :data:`~neuro.rules.registry.Key`):
kinds ``"time"``, ``"rate"``, ``"number"``, ``"int"``, ``"choice"`` (check: the choices),
``"bool"``; checks for numbers ``">0"``, ``">=0"`` or None, for ints the lowest value.  A default
written as a string is parsed like a value of the file; a number is an SI value used as it is.
The reader (:mod:`neuro.model.reader`) and the writer (:mod:`neuro.model.writer`) both use them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from neuro.model.encoding import ENCODINGS
from neuro.model.population import NEURON_TYPES, SURROGATES
from neuro.model.projection import FORMATS, PROJECTION_KINDS, SIGNS
from neuro.model.settings import CROSSCHECK_DEFAULTS, DATASETS, LOSSES, LR_SCHEDULES, READOUTS, TrainingSpec
from neuro.rules import registry

__all__ = [
    "CROSSCHECK_KEYS",
    "ENCODING_KEYS",
    "FORMAT_HELP",
    "MODEL_KEYS",
    "POPULATION_DEFAULTS",
    "PROJECTION_KEYS",
    "TOP_LEVEL",
    "TRAINING_KEYS",
    "Param",
]

#: A parameter: (kind, default, choices-or-constraint).
Param = tuple[str, Any, Any]

#: Defaults of the neuron parameters (Norse defaults; AdaptiveLIF after Norse's LSNN).
POPULATION_DEFAULTS: dict[str, Param] = {
    "tau_mem": ("time", "10 ms", ">0"),
    "tau_syn": ("time", "5 ms", ">0"),
    "v_th": ("number", 1.0, None),
    "v_reset": ("number", 0.0, None),
    "v_leak": ("number", 0.0, None),
    "refractory": ("time", "0 ms", ">=0"),
    "tau_adapt": ("time", "700 ms", ">0"),
    "adapt_increment": ("number", 1.8, ">=0"),
    "surrogate": ("choice", "superspike", SURROGATES),
    "surrogate_scale": ("number", 10.0, ">0"),
}

_TRAINING_KINDS: dict[str, tuple[str, Any]] = {
    "epochs": ("int", 1),
    "batch_size": ("int", 1),
    "microbatch": ("int", 1),
    "seed": ("int", 0),
    "learning_rate": ("number", ">0"),
    "readout": ("choice", READOUTS),
    "loss": ("choice", LOSSES),
    "rate_regularisation": ("number", ">=0"),
    "lr_schedule": ("choice", LR_SCHEDULES),
}
#: ``[training]``: the fields of :class:`~neuro.model.settings.TrainingSpec`, with its defaults.
TRAINING_KEYS: dict[str, Param] = {
    f.name: (_TRAINING_KINDS[f.name][0], f.default, _TRAINING_KINDS[f.name][1])
    for f in dataclasses.fields(TrainingSpec)
}

#: ``[crosscheck]``: the tolerances of :class:`~neuro.model.settings.CrosscheckSpec`.
CROSSCHECK_KEYS: dict[str, Param] = {
    "window": ("time", f"{CROSSCHECK_DEFAULTS['window'] * 1000:g} ms", ">0"),
    "min_gamma": ("number", CROSSCHECK_DEFAULTS["min_gamma"], ">0"),
    "rate_rtol": ("number", CROSSCHECK_DEFAULTS["rate_rtol"], ">=0"),
    "weight_atol": ("number", CROSSCHECK_DEFAULTS["weight_atol"], ">=0"),
}

#: ``[inputs.P]``: the kinds of the encoding parameters (which encoding has which:
#: :data:`~neuro.model.encoding.ENCODING_PARAMETERS`).
ENCODING_KEYS: dict[str, Param] = {
    "rate": ("rate", None, ">0"),
    "max_rate": ("rate", None, ">0"),
    "t_max": ("time", None, ">0"),
    "tau": ("time", None, ">0"),
    "threshold": ("number", 0.0, None),
    "gain": ("number", 1.0, None),
}

TOP_LEVEL = ("model", "populations", "projections", "inputs", "data", "training", "crosscheck", "reversible")
MODEL_KEYS = ("name", "description", "dt", "duration", "output", "format")
PROJECTION_KEYS = (
    "source", "target", "kind", "init", "format", "algebra", "grades", "delay", "rule",
    "rule_params", "bounds", "sign",
)  # fmt: skip


def _one_of(names: tuple[str, ...]) -> str:
    return " | ".join(names)


FORMAT_HELP = f"""\
[model]            name (required), description (one line), dt = "1 ms", duration (required),
                   output (the readout population; default: the only population nothing reads),
                   format (default storage format of the projections, "float32")
[populations.P]    type = {_one_of(NEURON_TYPES)}, size (> 0), and per type:
                   tau_mem "10 ms", tau_syn "5 ms", v_th 1, v_reset 0, v_leak 0, refractory "0 ms",
                   tau_adapt "700 ms", adapt_increment 1.8, surrogate {_one_of(SURROGATES)},
                   surrogate_scale 10 (potentials dimensionless, times with units)
[projections.J]    source, target, kind = {_one_of(PROJECTION_KINDS)}, init (a number, or
                   {{ dist = "normal", mean, std }} / {{ dist = "uniform", low, high }} /
                   {{ dist = "constant", value }} / given weights {{ file = "W.safetensors", key }}
                   or {{ file = "W.npy" }}, the path relative to the model file),
                   format = {_one_of(FORMATS)}, algebra [p, q, r] = [0, 0, 0],
                   grades = [0], delay "0 ms", rule = {_one_of(registry.names())},
                   bounds [low, high], sign = {_one_of(SIGNS)}
[projections.J.rule_params]  the rule's parameters (each rule declares its keys: neuro.rules.registry)
[inputs.P]         encoding = {_one_of(ENCODINGS)}: poisson (rate | max_rate in Hz),
                   latency (t_max = duration - dt, or tau for the RC law; threshold 0), current (gain 1)
[data]             name = {_one_of(DATASETS)}; other keys are passed to the data set verbatim
[training]         epochs 1, batch_size 32, microbatch 8, seed 0, learning_rate 1e-3,
                   readout {_one_of(READOUTS)}, loss {_one_of(LOSSES)},
                   rate_regularisation 0, lr_schedule {_one_of(LR_SCHEDULES)}
[crosscheck]       window "2 ms", min_gamma 0.9, rate_rtol 0.1, weight_atol 1e-9
[reversible]       population (a LIF population fed by an input), blocks 2, weight_scale 1
"""
