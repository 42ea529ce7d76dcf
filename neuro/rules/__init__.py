"""Learning rules.  Every rule hands weight changes to :class:`neuro.engine.UpdateEngine`; none
writes weights itself.  Rules know nothing of number formats."""

from neuro.rules.bptt import bptt_contribute, classification_loss, readout_scores
from neuro.rules.homeostasis import (
    AdaptiveThresholdParameters,
    adaptive_threshold_step,
    lateral_inhibition,
    normalisation_contribute,
    normalised_weights,
)
from neuro.rules.stdp import (
    TRIPLET_PARAMETER_SETS,
    PairSTDP,
    PairSTDPParameters,
    PairSTDPState,
    RewardSTDP,
    RSTDPParameters,
    TripletSTDP,
    TripletSTDPParameters,
    decay_factor,
    pair_contribute,
    pair_window,
    rstdp_interval,
    stdp_pair_interval,
    stdp_pair_step,
    stdp_triplet_interval,
    trace_interval,
    triplet_contribute,
    triplet_window,
)

__all__ = [
    "bptt_contribute", "classification_loss", "readout_scores",
    "AdaptiveThresholdParameters", "adaptive_threshold_step", "lateral_inhibition",
    "normalisation_contribute", "normalised_weights",
    "TRIPLET_PARAMETER_SETS", "PairSTDP", "PairSTDPParameters", "PairSTDPState", "RewardSTDP",
    "RSTDPParameters", "TripletSTDP", "TripletSTDPParameters", "decay_factor", "pair_contribute",
    "pair_window", "rstdp_interval", "stdp_pair_interval", "stdp_pair_step", "stdp_triplet_interval",
    "trace_interval", "triplet_contribute", "triplet_window",
]
