#!/usr/bin/env python3
"""Goodput of one transfer over a capped, lossy link: coded UDP (ccfd) against
the plain TCP wire, as a fraction of the cap.

Both face the same kernel: a private network namespace (its own loopback,
so traffic stays on 127.0.0.0/8) with a tbf qdisc capping the link and an
nftables rule dropping a random share of every packet sent to the receiver,
TCP and UDP alike. Needs root, iproute2 and nftables.

The drop sits after the cap (the receiver's input hook), so a lost packet
has used the cap, as on a lossy last hop behind the bottleneck: no transfer
can beat (1 - loss) x its framing efficiency. For ccfd that is 1024 payload
bytes per 1102 on the wire (0.929, systematic packets); for TCP 1448 per
1514 (0.956). A drop in the sender's output hook, ahead of the cap, is no
fair alternative: the kernel reports each such drop to the local TCP,
which resends at once (TCP kept 0.93 of the cap at 20% loss that way).

    scripts/bench_coded_loss.py [--cap-mbit 8] [--size-mb 8] [--loss 0,5,10,20] [--timeout 120]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "ccfd-bt")


def sh(*args, check=True):
    return subprocess.run(args, check=check, capture_output=True, text=True)


def one_run(ns, torrent, seed_dir, out_dir, coded, size, timeout):
    """Seeds and downloads once inside the namespace; returns seconds (None on timeout)."""
    port = "16881"
    seed = subprocess.Popen(
        ["ip", "netns", "exec", ns, BIN, "seed", torrent, "--data", seed_dir, "--bind", "127.0.0.2", "--port", port]
        + ([] if coded else ["--no-coded"]),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        start = time.monotonic()
        dl = subprocess.Popen(
            ["ip", "netns", "exec", ns, BIN, "download", torrent, "-o", out_dir, "--bind", "127.0.0.3", "--port", "0",
             "--peer", f"127.0.0.2:{port}", "--json"] + ([] if coded else ["--no-coded"]),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            out, _ = dl.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            dl.kill()
            dl.wait()
            return None, None
        elapsed = time.monotonic() - start
        summary = json.loads(out.splitlines()[0]) if out.strip() else {}
        return summary.get("seconds") or elapsed, summary.get("coded_bytes", 0)
    finally:
        seed.kill()
        seed.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cap-mbit", type=float, default=8.0)
    ap.add_argument("--size-mb", type=float, default=8.0)
    ap.add_argument("--loss", default="0,5,10,20")
    ap.add_argument("--timeout", type=float, default=120.0)
    a = ap.parse_args()
    if not os.path.exists(BIN):
        sys.exit("build first: cargo build --release")
    ns = f"ccfd-bench-{os.getpid()}"
    cap = a.cap_mbit * 1e6 / 8
    size = int(a.size_mb * 1e6)
    with tempfile.TemporaryDirectory(prefix="ccfd-loss-") as tmp:
        seed_dir = os.path.join(tmp, "seed")
        os.makedirs(seed_dir)
        with open(os.path.join(seed_dir, "f.bin"), "wb") as f:
            f.write(os.urandom(size))
        torrent = os.path.join(tmp, "f.torrent")
        sh(BIN, "create", os.path.join(seed_dir, "f.bin"), "-o", torrent, "--piece-length", "262144")
        sh("ip", "netns", "add", ns)
        try:
            # An Ethernet-sized MTU: tbf drops any packet larger than its bucket,
            # and loopback's 64 KiB segments would never pass.
            sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "mtu", "1500", "up")
            sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "lo", "root", "tbf",
               "rate", f"{a.cap_mbit}mbit", "burst", "64kbit", "latency", "50ms")
            sh("ip", "netns", "exec", ns, "nft", "add", "table", "inet", "ccfd")
            sh("ip", "netns", "exec", ns, "nft", "add chain inet ccfd in { type filter hook input priority 0; }")
            print(f"cap {a.cap_mbit} Mbit/s ({cap / 1e3:.0f} kB/s), {size / 1e6:.1f} MB, kernel drop on the receiver's input")
            print(f"{'loss':>5} {'coded goodput':>14} {'/cap':>6} {'plain TCP':>12} {'/cap':>6} {'coded/plain':>12}")
            for loss in [int(x) for x in a.loss.split(",")]:
                sh("ip", "netns", "exec", ns, "nft", "flush", "chain", "inet", "ccfd", "in")
                if loss > 0:
                    sh("ip", "netns", "exec", ns, "nft",
                       f"add rule inet ccfd in ip daddr 127.0.0.3 numgen random mod 100 < {loss} drop")
                row = {}
                for coded in (True, False):
                    out_dir = os.path.join(tmp, f"dl-{loss}-{coded}")
                    secs, coded_bytes = one_run(ns, torrent, seed_dir, out_dir, coded, size, a.timeout)
                    row[coded] = None if secs is None else size / secs
                    if coded and coded_bytes is not None and coded_bytes < size * 0.9:
                        print(f"  (coded run moved only {coded_bytes} bytes coded)")
                fmt = lambda r: ("timeout", "-") if r is None else (f"{r / 1e3:.0f} kB/s", f"{r / cap:.2f}")
                c, p = fmt(row[True]), fmt(row[False])
                ratio = f"{row[True] / row[False]:.2f}" if row[True] and row[False] else "-"
                print(f"{loss:>4}% {c[0]:>14} {c[1]:>6} {p[0]:>12} {p[1]:>6} {ratio:>12}")
                sys.stdout.flush()
        finally:
            sh("ip", "netns", "del", ns, check=False)


if __name__ == "__main__":
    main()
