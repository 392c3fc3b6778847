"""A process that races for a lease (tests/leases/test_ownership.py); light to import, so racers start together."""

import time
from pathlib import Path

from pipeline.leases.ownership import Busy, Lease


def race(path: str, start: float, everyone_tried, results) -> None:
    while time.time() < start:
        pass
    try:
        lease = Lease.acquire(Path(path), "trial t")
    except Busy:
        results.put("busy")
        return
    results.put("won")
    # Held until every racer has tried, however late a loaded machine started it: a lease released earlier
    # would rightly be won again.
    everyone_tried.wait(300)
    lease.release()
