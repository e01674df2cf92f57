"""A paced producer for the lag benchmark: ``lag_worker.py HOME RATE SECONDS BATCH``.

Each operation carries the time its enqueue call started (in ``context``),
so a reader can compute enqueue-to-visible lag.
"""

from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> int:
    from codi_queue import enqueue_many

    home, rate, seconds, batch = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4])
    calls_per_s = rate / batch
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < seconds:
        now = repr(time.time())
        if not enqueue_many("tool_event", [{"tool_name": "lag", "success": True, "context": now}] * batch, home=home):
            return 1
        n += 1
        time.sleep(max(0.0, start + n / calls_per_s - time.monotonic()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
