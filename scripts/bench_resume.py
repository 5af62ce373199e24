#!/usr/bin/python3
"""Fast-resume benchmark: what a restart of a finished download costs.

usage: scripts/bench_resume.py [--size-mib 4096] [--piece-kib 1024] [--dir DIR]

Downloads a random payload from a ccfd-bt seed over loopback with
`ccfd-bt download`, which exits on completion (a clean stop: the resume
record is saved after the last write). Then runs the same command again
twice: as it is (the record vouches for the unchanged file, nothing is
hashed) and with `--recheck` (every piece hashed, as without a record).
Prints wall seconds and CPU seconds (user + system, from wait4) of each
restart. The page cache is warm for both: the recheck figure is hashing,
not disk reads. Builds ccfd-bt first.
"""
import argparse
import os
import shutil
import subprocess
import tempfile
import time

import sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_wire import ROOT, seed_payload, stop, wait_port  # noqa: E402

NET = "127.0.73"
LOCAL = ["--no-dht", "--no-port-mapping"]


def timed(cmd, log):
    """Runs CMD to its end; returns (wall seconds, CPU seconds)."""
    began = time.time()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=f)
        _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        sys.exit(f"{cmd[1]} failed; see {log}")
    return time.time() - began, usage.ru_utime + usage.ru_stime


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=4096)
    ap.add_argument("--piece-kib", type=int, default=1024)
    ap.add_argument("--dir", default=None)
    a = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "-q"], cwd=ROOT, check=True)
    bin_path = os.path.join(ROOT, "target/release/ccfd-bt")
    work = a.dir or tempfile.mkdtemp(prefix="ccfd-resume-bench-")
    seed_dir, _, torrent, _ = seed_payload(bin_path, work, a.size_mib, "--piece-length", str(a.piece_kib << 10))
    seed = subprocess.Popen([bin_path, "seed", torrent, "--data", seed_dir, "--bind", f"{NET}.2", "--port", "6881", *LOCAL],
                            stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "seed.log"), "w"))
    try:
        wait_port(f"{NET}.2", 6881, timeout=600)
        out = os.path.join(work, "out")
        cmd = [bin_path, "download", torrent, "-o", out, "--peer", f"{NET}.2:6881", "--bind", f"{NET}.3", "--port", "0", *LOCAL]
        wall, cpu = timed(cmd, os.path.join(work, "download.log"))
        print(f"{a.size_mib} MiB in {a.piece_kib} KiB pieces: first download {wall:.1f} s, {cpu:.2f} CPU-s")
        print(f"{'restart':<28} {'wall s':>8} {'CPU s':>8}")
        for name, extra in [("resume record (default)", []), ("--recheck (every piece)", ["--recheck"])]:
            wall, cpu = timed(cmd + extra, os.path.join(work, f"restart-{len(extra)}.log"))
            print(f"{name:<28} {wall:>8.2f} {cpu:>8.2f}", flush=True)
    finally:
        stop(seed)
        if not a.dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
