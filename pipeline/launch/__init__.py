"""Launching grids with submitit: cluster profiles, the array task, submission, status and cancel.

``profiles`` reads ``slurm/profiles/*.toml``; ``task`` is what one array task runs; ``submission``
submits to SLURM or to this machine; ``monitor`` joins trial files with the queue for status,
resubmission and cancellation.
"""
