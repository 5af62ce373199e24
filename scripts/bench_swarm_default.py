#!/usr/bin/python3
"""Swarm benchmark as a new user runs it: separate processes, default flags.

usage: scripts/bench_swarm_default.py [--n 6,12,24] [--piece-kib 256,1024]
           [--size-mib 24] [--rate 1000] [--runs 1] [--seed-flags "..."] [--dir DIR]

One `ccfd-bt seed` and N `ccfd-bt download --seed-after` leechers through
`ccfd-bt tracker`, every one a process of its own with no flag but its
address and `--max-upload-rate RATE` (kB/s), all started together on a
random payload. T* is the fluid bound F/u (every upload capped at u, the
seed's too, downloads free); the time is from the leechers' start until
the last one prints its summary. The seed's upload is what the leechers
say they received from its address. `--seed-flags` adds flags to the seed
only (for example `--super-seed never` for the old default, or
`--super-seed always`), to print a tuned row beside the default one.
Builds ccfd-bt first.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_wire import ROOT, seed_payload, stop, wait_port, wait_summaries  # noqa: E402

NET = "127.0.71"
LOCAL = ["--no-dht", "--no-port-mapping"]


def ip_of(i):
    """Host i of the bench's /16: 127.0.71.x for i < 250, then 127.0.72.x."""
    return f"{NET}.{i + 2}" if i < 250 else f"127.0.72.{i - 248}"


def run_once(bin_path, work, n, piece_kib, size_mib, rate, seed_flags):
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    tracker_ip = ip_of(0)
    announce = f"http://{tracker_ip}:7000/announce"
    seed_dir, payload, torrent, _ = seed_payload(
        bin_path, work, size_mib, "--piece-length", str(piece_kib << 10), "--tracker", announce)
    procs = []
    try:
        procs.append(subprocess.Popen([bin_path, "tracker", "--http", f"{tracker_ip}:7000"],
                                      stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "tracker.log"), "w")))
        wait_port(tracker_ip, 7000)
        seed_ip = ip_of(1)
        seed = [bin_path, "seed", torrent, "--data", seed_dir, "--bind", seed_ip, "--port", "6881",
                "--max-upload-rate", str(rate), "--json", *LOCAL, *seed_flags]
        procs.append(subprocess.Popen(seed, stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "seed.log"), "w")))
        wait_port(seed_ip, 6881)
        outs = []
        start = time.time()
        for i in range(n):
            ip = ip_of(2 + i)
            out = os.path.join(work, f"leech{i}.json")
            cmd = [bin_path, "download", torrent, "-o", os.path.join(work, f"leech{i}"), "--bind", ip, "--port", "6881",
                   "--max-upload-rate", str(rate), "--seed-after", "--json", *LOCAL]
            procs.append(subprocess.Popen(cmd, stdout=open(out, "w"), stderr=open(os.path.join(work, f"leech{i}.log"), "w")))
            outs.append(out)
        done = wait_summaries(outs, start, start + 60 * size_mib)  # far beyond any sane run
        if len(done) < n:
            sys.exit(f"only {len(done)} of {n} leechers finished; logs in {work}")
        seconds = max(t for t, _ in done.values())
        from_seed = sum(b for _, s in done.values() for a, b in s["bytes_from"].items() if a.startswith(seed_ip + ":"))
        return seconds, from_seed
    finally:
        for p in reversed(procs):
            stop(p)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", default="6,12,24")
    ap.add_argument("--piece-kib", default="256")
    ap.add_argument("--size-mib", type=int, default=24)
    ap.add_argument("--rate", type=int, default=1000, help="every upload cap, kB/s")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--seed-flags", default="", help="extra flags for the seed: a tuned row")
    ap.add_argument("--dir", default=None)
    a = ap.parse_args()
    subprocess.run(["cargo", "build", "--release", "-q"], cwd=ROOT, check=True)
    bin_path = os.path.join(ROOT, "target/release/ccfd-bt")
    base = a.dir or tempfile.mkdtemp(prefix="ccfd-swarm-default-")
    size = a.size_mib << 20
    t_star = size / (a.rate * 1000)
    flags = a.seed_flags.split()
    label = "default flags" + (f", seed {a.seed_flags}" if flags else "")
    print(f"F = {a.size_mib} MiB, u = {a.rate} kB/s for every peer, T* = F/u = {t_star:.1f} s; {label}")
    print(f"{'N':>4} {'piece':>7} {'seconds':>9} {'T/T*':>7} {'seed up/F':>10}   runs (T/T*)")
    for piece_kib in [int(x) for x in a.piece_kib.split(",")]:
        for n in [int(x) for x in a.n.split(",")]:
            rows = [run_once(bin_path, os.path.join(base, f"n{n}-p{piece_kib}-r{r}"), n, piece_kib, a.size_mib, a.rate, flags)
                    for r in range(a.runs)]
            secs = statistics.median(s for s, _ in rows)
            seed = statistics.median(u for _, u in rows)
            each = " ".join(f"{s / t_star:.3f}" for s, _ in rows)
            print(f"{n:>4} {piece_kib:>5}Ki {secs:>9.1f} {secs / t_star:>7.3f} {seed / size:>10.3f}   {each}", flush=True)
    if not a.dir:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
