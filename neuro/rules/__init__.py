"""Learning rules.  Every rule hands weight changes to :class:`neuro.engine.UpdateEngine`; none
writes weights itself.  Rules know nothing of number formats."""

from neuro.rules.bptt import bptt_contribute, classification_loss, readout_scores

__all__ = ["bptt_contribute", "classification_loss", "readout_scores"]
