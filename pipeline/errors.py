"""The failures the pipeline expects and explains. A command reports one of them as a single line, without a
traceback (``pipeline.cli.one_line``), and exits with its ``exit_code``: 2 where the request was refused
(nothing was done), 1 where the work itself failed. Any other exception is a bug, and says so with a hint of
``--debug``."""

from __future__ import annotations


class UserError(Exception):
    """An expected failure, reported without a traceback: its kind and its message (``error: Busy: ...``)."""

    exit_code = 1
    message_alone = False  # the message says it all: no kind before it (``error: unknown group 'x' ...``)


class ConfigError(UserError, ValueError):
    """A bad name or value in a configuration, or a request this folder or machine cannot serve."""

    exit_code = 2
    message_alone = True


class SchedulerError(UserError):
    """The scheduler refused a request or did not answer (sbatch, scancel, squeue). A launch it refuses
    launched nothing: its ``launching`` record is taken back (``pipeline.launch.records``)."""

    exit_code = 2
    message_alone = True
