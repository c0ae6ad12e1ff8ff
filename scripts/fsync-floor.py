#!/usr/bin/env python3
"""fsync-floor.py - the disk's floor under a replicated write, measured here.

    python3 scripts/fsync-floor.py [DIR] [N]     (DIR: where the data dirs live, default /tmp)

A write is acknowledged once the leader and one follower have each appended its log record
(about 330 bytes for a 256 B put) and fdatasync'ed it. This times exactly that step, N times
(default 2000): first one writer alone, then three at once as the three members of a
cluster on one machine do, each in its own file on DIR's filesystem. No put on this disk
can be acknowledged faster than the second figure's p50, whatever the software does.
"""
import multiprocessing as mp
import os
import sys
import time

RECORD = b"x" * 327


def writer(path, n, out):
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
    times = []
    for _ in range(n):
        t = time.perf_counter()
        os.write(fd, RECORD)
        os.fdatasync(fd)
        times.append(time.perf_counter() - t)
    os.close(fd)
    os.unlink(path)
    out.put(times)


def main():
    base = sys.argv[1] if len(sys.argv) > 1 else "/tmp"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    for procs in (1, 3):
        out = mp.Queue()
        ps = [mp.Process(target=writer, args=(f"{base}/fsync-floor.{os.getpid()}.{i}", n, out))
              for i in range(procs)]
        for p in ps:
            p.start()
        times = []
        for _ in ps:
            times += out.get()
        for p in ps:
            p.join()
        times.sort()
        p50 = times[len(times) // 2] * 1e6
        p99 = times[int(len(times) * 0.99)] * 1e6
        print(f"{procs} writer(s): append {len(RECORD)} B + fdatasync p50 {p50:.0f} us, p99 {p99:.0f} us")


if __name__ == "__main__":
    main()
