"""Command line: ``python -m pipeline COMMAND ...`` (also installed as ``pipeline``).

Every command reports an error as one line on stderr and exits non-zero (2 for bad input); ``--debug``
(or PIPELINE_DEBUG=1) shows the traceback instead. The parser and its commands are this package's modules:
``parser`` (every option), ``training`` (train, run-trial), ``launching`` (submit, smoke), ``resubmitting``
(resubmit) and ``following`` (plan, status, logs, cancel, aggregate). Starting it imports no torch: the
modules that train, read trial files or analyse are imported by the commands that need them.
"""

from __future__ import annotations

import os
import signal
import sys

from pipeline.cli.parser import build_parser
from pipeline.errors import UserError
from pipeline.launch.stop_signals import LaunchStopped
from pipeline.settings import quoted
from pipeline.stopping import Cancelled

__all__ = ["build_parser", "main", "one_line"]


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    message = text[0] if text else ""
    if isinstance(error, UserError) and error.message_alone:
        return message
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("PIPELINE_DEBUG", "") not in ("", "0")
    try:
        return args.handler(args)
    except Cancelled as cancelled:
        print(f"stopped: {cancelled}; the trial saved its last epoch and resumes when run again", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (``status | head``): nothing more to say, and nothing to say it to.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except LaunchStopped as stopped:
        # The launch is recorded and runs on: say what it launched, then that the command stopped.
        if stopped.said:
            print("\n".join(stopped.said), flush=True)
        out = quoted(stopped.out_dir or getattr(args, "out", "OUT"))
        print(f"{stopped} once the launch was recorded: what it launched runs on; follow it with "
              f"`python -m pipeline status --out {out}`, stop it with `python -m pipeline cancel --out {out}`",
              file=sys.stderr)
        return 128 + stopped.signum
    except KeyboardInterrupt as error:
        if debug:
            raise
        print(args.interrupted.format(out=quoted(getattr(args, "out", "OUT"))), file=sys.stderr)
        return 128 + getattr(error, "signum", signal.SIGINT)
    except Exception as error:
        if debug:
            raise
        # Errors the pipeline raises on purpose say all there is to say; a traceback helps with the others.
        expected = isinstance(error, UserError)
        hint = "" if expected else " (--debug shows the traceback)"
        print(f"error: {one_line(error)}{hint}", file=sys.stderr)
        return error.exit_code if isinstance(error, UserError) else 1
