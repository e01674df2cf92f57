"""Run every benchmark in one process and print one table: `python bench/run.py [--quick]`.

Ratios compare figures taken in the same run on the same machine.
"""

from __future__ import annotations

import compileall
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import drain, enqueue, host, lag, scale, shared_writes, startup, storm, sync  # noqa: E402
from bench.common import ROOT, machine, print_table  # noqa: E402


def main() -> int:
    quick = "--quick" in sys.argv
    # Start-up times must not include compiling our sources: environments with
    # PYTHONDONTWRITEBYTECODE (this one has it) never cache them otherwise.
    compileall.compile_dir(os.path.join(ROOT, "codi_queue"), quiet=1)
    rows = []
    for module in (host, storm, startup, enqueue, drain, lag, scale, shared_writes, sync):
        rows += module.run(quick=quick)
    print(f"machine: {machine()}")
    print_table(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
