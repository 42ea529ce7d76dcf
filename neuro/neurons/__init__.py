"""The functional neuron layer: pure step functions over NamedTuple parameters and states.

Every simulator of neuro (the Norse network, the closed plastic loop, the online learners,
checkpointed BPTT, the event simulator's torch fallback) steps its neurons with these functions,
so "our LIF equals Norse" and "the same spikes in every simulator" hold by construction.  This
package knows nothing of learning, engines, graphs or model files (it imports nothing else from
neuro).

* :mod:`neuro.neurons.surrogate`: the Heaviside spike with one surrogate family
  (:data:`SURROGATES`, :func:`spike_fn`, :func:`surrogate_derivative`).
* :mod:`neuro.neurons.lif`: LI, LIF, LIFBox and AdaptiveLIF with refractoriness
  (:data:`NEURON_TYPES`, :func:`integrate`, :func:`li_step`, :func:`lif_step`,
  :func:`lif_step_psi`, :func:`lif_step_events`).
"""

from neuro.neurons.lif import (
    NEURON_TYPES,
    SPIKING_TYPES,
    AdaptiveLIFParameters,
    AdaptiveLIFState,
    LIFBoxParameters,
    LIFBoxState,
    LIFParameters,
    LIFState,
    LIParameters,
    LIState,
    NeuronSpec,
    initial_state,
    integrate,
    li_step,
    lif_step,
    lif_step_events,
    lif_step_psi,
    neuron_parameters,
    refractory_steps,
)
from neuro.neurons.surrogate import SURROGATES, SpikeFunction, heaviside, spike_fn, surrogate_derivative

__all__ = [
    "NEURON_TYPES",
    "SPIKING_TYPES",
    "SURROGATES",
    "AdaptiveLIFParameters",
    "AdaptiveLIFState",
    "LIFBoxParameters",
    "LIFBoxState",
    "LIFParameters",
    "LIFState",
    "LIParameters",
    "LIState",
    "NeuronSpec",
    "SpikeFunction",
    "heaviside",
    "initial_state",
    "integrate",
    "li_step",
    "lif_step",
    "lif_step_events",
    "lif_step_psi",
    "neuron_parameters",
    "refractory_steps",
    "spike_fn",
    "surrogate_derivative",
]
