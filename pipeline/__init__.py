"""Optimization dynamics of equivariant and augmented networks: groups, models, training, trials."""

__version__ = "0.1.0"
