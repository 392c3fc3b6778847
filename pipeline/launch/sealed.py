"""Task pickles that a task unpickles only if its own submission wrote them.

Submitit hands a task its work as a pickle in the results folder (``OUT/submitit/<array>/<job>_submitted.pkl``,
written at submission and again at every checkpoint before a requeue), and the task unpickles it: unpickling
runs whatever code the pickle names. A folder on shared storage is writable by a group, so a pickle planted
there ran on the node as the user who submitted.

So every pickle a submission or its tasks write is *sealed*: an HMAC-SHA256 of its bytes under a key made
for that submission (:func:`new_key`), written before the bytes. The task checks the seal of the bytes it
read before it unpickles them, and refuses, in one line, a pickle without a valid one. The key never touches
the folder: it travels in the task's environment (``PIPELINE_TASK_KEY``), which sbatch copies at
submission together with the script (SLURM keeps both; the group can read neither: only the job's owner and
the administrators can), and which the local executor's controller passes to its workers. A task that checkpoints
seals its new pickle with the same key, so a requeued task checks it as the first.

Why not a digest of each pickle in the sbatch script instead: a checkpoint rewrites the pickle (the count
of time-outs left, the task's state), so the node must be able to seal, which a digest fixed at submission
cannot allow; and the script's copy that submitit keeps in the folder is readable by the group, so a key must
not be in it either.

The task runs ``python -m pipeline.launch.sealed FOLDER`` in place of submitit's ``submitit.core._submit
FOLDER``: the same ``process_job``, with ``DelayedSubmission``'s dump and load sealing and checking
(:func:`sealing`, which the submitting side holds while submitit writes the first pickles).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import pickle
import secrets
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path

from pipeline.errors import UserError
from pipeline.settings import quoted

KEY_VARIABLE = "PIPELINE_TASK_KEY"
MAGIC = b"pipeline sealed pickle 1\n"
_DIGEST_HEX = 64


class UnsealedPickle(UserError):
    """A task's pickle whose seal does not prove it was written by its own submission: not unpickled."""


def new_key() -> str:
    return secrets.token_hex(32)


def _mac(key: str, data: bytes) -> bytes:
    return hmac.new(key.encode(), data, hashlib.sha256).hexdigest().encode()


def seal(data: bytes, key: str) -> bytes:
    return MAGIC + _mac(key, data) + b"\n" + data


def unseal(blob: bytes, key: str, path: Path) -> bytes:
    """The pickle's bytes, if ``blob`` carries a valid seal under ``key``; else :class:`UnsealedPickle`."""
    head = len(MAGIC) + _DIGEST_HEX + 1
    if not blob.startswith(MAGIC) or len(blob) < head:
        raise UnsealedPickle(f"refusing to unpickle {quoted(path)}: it carries no seal of this submission (not "
                             "written by it, or written before pickles were sealed); resubmit the trials")
    mac, data = blob[len(MAGIC):head - 1], blob[head:]
    if not hmac.compare_digest(mac, _mac(key, data)):
        raise UnsealedPickle(f"refusing to unpickle {quoted(path)}: its seal does not match this submission's key "
                             "(the file was changed or replaced in the folder since it was written); resubmit")
    return data


def _key() -> str:
    key = os.environ.get(KEY_VARIABLE, "")
    if not key:
        raise UnsealedPickle(f"the task's environment has no {KEY_VARIABLE}, so its pickle cannot be checked and is "
                             "not unpickled (does the profile's `additional` set sbatch's `export`? it must keep "
                             "the submitting environment)")
    return key


def _dump_sealed(self: object, filepath: str | Path) -> None:
    # deferred: cloudpickle (submitit's own pickler), only where a submission is made
    import cloudpickle  # type: ignore[import-untyped]  # no type information shipped

    data = cloudpickle.dumps(self, pickle.HIGHEST_PROTOCOL)
    with open(filepath, "wb") as handle:
        handle.write(seal(data, _key()))


def _load_checked(cls: type, filepath: str | Path) -> object:
    path = Path(filepath)
    found = pickle.loads(unseal(path.read_bytes(), _key(), path))  # the bytes checked are the bytes unpickled
    if type(found).__name__ != cls.__name__:
        raise UnsealedPickle(f"{quoted(path)} holds a {type(found).__name__}, not a submission")
    return found


@contextlib.contextmanager
def sealing(key: str) -> Iterator[None]:
    """For the block: submitit's pickles of submissions are written sealed with ``key`` and read only with a
    valid seal, and ``key`` is in this process's environment (whence sbatch and the local controller pass it
    to the tasks)."""
    from submitit.core import utils  # deferred: submitit, only where a submission is made

    cls = utils.DelayedSubmission
    previous = cls.dump, cls.__dict__["load"], os.environ.get(KEY_VARIABLE)
    cls.dump = _dump_sealed  # type: ignore[method-assign]
    cls.load = classmethod(_load_checked)  # type: ignore[method-assign, assignment]
    os.environ[KEY_VARIABLE] = key
    try:
        yield
    finally:
        cls.dump, cls.load = previous[0], previous[1]  # type: ignore[method-assign]
        if previous[2] is None:
            os.environ.pop(KEY_VARIABLE, None)
        else:
            os.environ[KEY_VARIABLE] = previous[2]


def command(python: str, folder: Path) -> str:
    """The command a task runs: this module on its submitit folder (``python`` already quoted)."""
    return " ".join([python, "-u -m", __name__, shlex.quote(str(folder))])


def main(argv: list[str]) -> int:
    from submitit.core.submission import process_job  # deferred: submitit, only in the task that runs it

    if len(argv) != 1:
        print(f"usage: python -m {__name__} FOLDER", file=sys.stderr)
        return 2
    try:
        key = _key()
    except UnsealedPickle as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    with sealing(key):
        try:
            process_job(argv[0])
        except UnsealedPickle as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
