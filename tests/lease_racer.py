"""A process that races for a lease (tests/test_ownership.py); light to import, so racers start together."""

import time
from pathlib import Path

from pipeline.ownership import Busy, Lease


def race(path: str, start: float, hold_s: float, results) -> None:
    while time.time() < start:
        pass
    try:
        lease = Lease.acquire(Path(path), "trial t")
    except Busy:
        results.put("busy")
        return
    results.put("won")
    time.sleep(hold_s)  # long after every racer has tried
    lease.release()
