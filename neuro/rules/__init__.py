"""Learning rules.  Each rule is one module that registers itself in :mod:`neuro.rules.registry`;
every rule hands its weight changes to the engine through the contribution protocol and none writes
weights itself.  Rules know nothing of number formats.

Importing this package registers the built-in rules: ``none``, ``bptt`` (surrogate-gradient BPTT),
``eprop`` and ``ottt`` (online eligibility rules), ``stdp_pair``, ``stdp_triplet`` and ``rstdp``.
How to add a rule: see ``neuro/rules/README.md``.
"""

from neuro.rules import registry
from neuro.rules.bptt import bptt_contribute, classification_loss, readout_scores
from neuro.rules.homeostasis import normalisation_contribute, normalised_weights
from neuro.rules.online import OnlineLearner
from neuro.rules.rstdp import RewardSTDP, RSTDPParameters, RSTDPState, rstdp_init, rstdp_interval
from neuro.rules.stdp_pair import (
    PairSTDP,
    PairSTDPParameters,
    PairSTDPState,
    PairTerms,
    pair_contribute,
    pair_delta,
    pair_init,
    pair_window,
    stdp_pair_interval,
    stdp_pair_step,
)
from neuro.rules.stdp_triplet import (
    TRIPLET_PARAMETER_SETS,
    TripletSTDP,
    TripletSTDPParameters,
    TripletSTDPState,
    TripletTerms,
    stdp_triplet_interval,
    triplet_contribute,
    triplet_delta,
    triplet_init,
    triplet_window,
)
from neuro.rules.traces import decay_factor, trace_interval

__all__ = [
    "registry",
    "bptt_contribute", "classification_loss", "readout_scores",
    "normalisation_contribute", "normalised_weights", "OnlineLearner",
    "RewardSTDP", "RSTDPParameters", "RSTDPState", "rstdp_init", "rstdp_interval",
    "PairSTDP", "PairSTDPParameters", "PairSTDPState", "PairTerms", "pair_contribute", "pair_delta",
    "pair_init", "pair_window", "stdp_pair_interval", "stdp_pair_step",
    "TRIPLET_PARAMETER_SETS", "TripletSTDP", "TripletSTDPParameters", "TripletSTDPState", "TripletTerms",
    "stdp_triplet_interval", "triplet_contribute", "triplet_delta", "triplet_init", "triplet_window",
    "decay_factor", "trace_interval",
]  # fmt: skip
