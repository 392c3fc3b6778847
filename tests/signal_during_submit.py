"""``python tests/signal_during_submit.py WHERE SIGNAL ARGS...``: ``pipeline ARGS...`` that sends itself SIGNAL at
WHERE: ``launch`` (right after the local workers started, before the launch's record is complete) or
``gather`` (while the folder's guard is held, deciding what to submit). For tests/launch/test_submit_interrupted.py."""

import signal
import sys

from pipeline.cli import main
from pipeline.launch import monitor
from pipeline.launch.backends.local import LocalBackend

where, name, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
signum = getattr(signal, name)
if where == "launch":
    launch = LocalBackend.launch

    def launch_then_signal(self, *args, **kwargs):
        jobs = launch(self, *args, **kwargs)
        signal.raise_signal(signum)
        return jobs

    LocalBackend.launch = launch_then_signal  # type: ignore[method-assign]
else:
    gather = monitor.gather

    def gather_then_signal(*args, **kwargs):
        signal.raise_signal(signum)
        return gather(*args, **kwargs)

    monitor.gather = gather_then_signal
sys.exit(main(argv))
