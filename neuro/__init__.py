"""neuro: spiking neural networks trained through one exact update engine.

Layers (bottom-up, a lower layer never imports a higher one):
``numerics`` (posits, b-posits, quire) -> ``algebra`` -> ``engine`` -> ``rules`` / ``network`` ->
``train`` -> ``registry`` / ``serve``.  Importing :mod:`neuro` is cheap: Norse and Brian2 are only
imported by the modules that need them.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
