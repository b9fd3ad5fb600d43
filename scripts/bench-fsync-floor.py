#!/usr/bin/python3
"""The fsync floor of a disk: what one durable append costs, with nothing else.

    scripts/bench-fsync-floor.py [DIR] [N]

Appends N (default 3000) records of 6,000 bytes to a preallocated file in DIR
(default: $TMPDIR or /tmp), each followed by fdatasync, as the sequencer's log
does for a lone writer's 1-row commit, and prints the latency (p50, p99) and
the CPU this process spent per append (BENCHMARKS.md, "Where the time goes").
"""
import os
import resource
import sys
import tempfile
import time

directory = sys.argv[1] if len(sys.argv) > 1 else tempfile.gettempdir()
n = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
path = os.path.join(directory, f"synd-fsync-floor-{os.getpid()}.bin")
fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
try:
    os.posix_fallocate(fd, 0, n * 6144)
    os.fsync(fd)
    record = os.urandom(6000)
    latencies = []
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    for i in range(n):
        start = time.perf_counter()
        os.pwrite(fd, record, i * 6144)
        os.fdatasync(fd)
        latencies.append(time.perf_counter() - start)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
finally:
    os.close(fd)
    os.unlink(path)
latencies.sort()
user = (r1.ru_utime - r0.ru_utime) / n * 1e6
system = (r1.ru_stime - r0.ru_stime) / n * 1e6
print(f"pwrite 6000 B + fdatasync, {n} times in {directory}: p50 {latencies[n // 2] * 1e6:.0f} us, "
      f"p99 {latencies[int(n * 0.99)] * 1e6:.0f} us, CPU {user + system:.0f} us per append ({system:.0f} in the kernel)")
