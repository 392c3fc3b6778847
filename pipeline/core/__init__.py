"""The numerical core: the pixel groups and projections onto E, models, data, training and the
stationary-point search; torch, no files."""
