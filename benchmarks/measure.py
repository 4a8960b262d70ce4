"""Run one command; print its wall time, peak RSS and exit code.

    python benchmarks/measure.py STDERR_FILE ARGV...

prints ``seconds max_rss_kib exit_code`` on stdout. The command's stdout is
discarded and its stderr written to STDERR_FILE.

Why a separate, small process: on Linux a child's ``ru_maxrss`` starts at
the peak RSS of the process that spawned it (``exec`` records the old
address space's high-water mark, and Python's subprocess uses ``vfork``, so
the old address space is the parent's). Spawned straight from run.py, every
command would report at least run.py's own peak, which grows while it builds
the models. This launcher imports nothing heavy, so the floor it adds is
that of a bare Python (about 14 MiB), below any command measured.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time


def main() -> None:
    stderr_path, argv = sys.argv[1], sys.argv[2:]
    with open(stderr_path, "wb") as err:
        started = time.perf_counter()
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    # ru_maxrss is in KiB on Linux.
    print(f"{seconds:.6f} {usage.ru_maxrss} {code}")


if __name__ == "__main__":
    main()
