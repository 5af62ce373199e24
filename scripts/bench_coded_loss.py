#!/usr/bin/env python3
"""Goodput of one transfer over a capped, lossy link: coded UDP (ccfd) against
the plain TCP wire, as a fraction of the cap.

Both face the same kernel path: three network namespaces, seed -- router --
leecher, joined by veth pairs carrying 127.0.0.0/8 addresses (route_localnet),
so traffic stays on 127/8. The router's egress towards the leecher has a tbf
qdisc: the bottleneck. An nftables rule drops a random share of every packet
towards the leecher, TCP and UDP alike, in one of two places:

  after   the leecher's input hook: behind the bottleneck, like a lossy last
          hop (Wi-Fi). A lost packet has used the cap, so no transfer can beat
          (1 - loss) x its framing efficiency: for ccfd 1024 payload bytes per
          1102 on the wire (0.929, systematic packets), for TCP 1448 per 1514
          (0.956).
  before  the router's forward hook: ahead of the bottleneck, like loss on an
          upstream link. A lost packet never reaches the cap; a sender that
          keeps the bottleneck busy loses only the time its recovery takes.

The drop is on another host's hook in both cases, so the sending TCP learns
of a loss only as a real network would tell it (a drop in the sender's own
output hook is reported to the local TCP, which resends at once).
Needs root, iproute2 and nftables.

    scripts/bench_coded_loss.py [--cap-mbit 8] [--size-mb 8] [--loss 0,5,10,20]
                                [--placement after,before] [--timeout 120]
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
SEED_IP, ROUTER_SEED_SIDE = "127.0.1.2", "127.0.1.1"
LEECH_IP, ROUTER_LEECH_SIDE = "127.0.2.2", "127.0.2.1"


def sh(*args, check=True):
    return subprocess.run(args, check=check, capture_output=True, text=True)


def ns_sh(ns, *args, check=True):
    return sh("ip", "netns", "exec", ns, *args, check=check)


class Topology:
    """seed (s0) -- (r0) router (r1) -- (l0) leecher, torn down on exit."""

    def __init__(self, cap_mbit):
        tag = os.getpid()
        self.seed, self.router, self.leech = f"ccfd-s{tag}", f"ccfd-r{tag}", f"ccfd-l{tag}"
        self.cap_mbit = cap_mbit

    def __enter__(self):
        for ns in (self.seed, self.router, self.leech):
            sh("ip", "netns", "add", ns)
        try:
            self._build()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _build(self):
        s, r, l = self.seed, self.router, self.leech
        sh("ip", "link", "add", "s0", "netns", s, "type", "veth", "peer", "name", "r0", "netns", r)
        sh("ip", "link", "add", "r1", "netns", r, "type", "veth", "peer", "name", "l0", "netns", l)
        for ns, dev, addr in ((s, "s0", SEED_IP), (r, "r0", ROUTER_SEED_SIDE), (r, "r1", ROUTER_LEECH_SIDE), (l, "l0", LEECH_IP)):
            ns_sh(ns, "sysctl", "-qw", "net.ipv4.conf.all.route_localnet=1", f"net.ipv4.conf.{dev}.route_localnet=1",
                  "net.ipv4.conf.all.rp_filter=0", f"net.ipv4.conf.{dev}.rp_filter=0")
            ns_sh(ns, "ip", "addr", "add", f"{addr}/24", "dev", dev)
            ns_sh(ns, "ip", "link", "set", dev, "mtu", "1500", "up")
        ns_sh(r, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        ns_sh(s, "ip", "route", "add", "127.0.2.0/24", "via", ROUTER_SEED_SIDE)
        ns_sh(l, "ip", "route", "add", "127.0.1.0/24", "via", ROUTER_LEECH_SIDE)
        ns_sh(r, "tc", "qdisc", "add", "dev", "r1", "root", "tbf",
              "rate", f"{self.cap_mbit}mbit", "burst", "64kbit", "latency", "50ms")
        for ns, hook in ((r, "forward"), (l, "input")):
            ns_sh(ns, "nft", "add", "table", "inet", "ccfd")
            ns_sh(ns, "nft", f"add chain inet ccfd loss {{ type filter hook {hook} priority 0; }}")

    def set_loss(self, placement, loss):
        """Drops `loss` percent towards the leecher, before or after the cap."""
        for ns in (self.router, self.leech):
            ns_sh(ns, "nft", "flush", "chain", "inet", "ccfd", "loss")
        if loss > 0:
            ns = self.router if placement == "before" else self.leech
            ns_sh(ns, "nft", f"add rule inet ccfd loss ip daddr {LEECH_IP} numgen random mod 100 < {loss} drop")

    def __exit__(self, *exc):
        for ns in (self.seed, self.router, self.leech):
            sh("ip", "netns", "del", ns, check=False)


def one_run(topo, torrent, seed_dir, out_dir, coded, timeout):
    """Seeds and downloads once across the topology; returns (seconds, coded bytes), None on timeout."""
    port = "16881"
    flags = [] if coded else ["--no-coded"]
    seed = subprocess.Popen(
        ["ip", "netns", "exec", topo.seed, BIN, "seed", torrent, "--data", seed_dir, "--bind", SEED_IP, "--port", port] + flags,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        start = time.monotonic()
        dl = subprocess.Popen(
            ["ip", "netns", "exec", topo.leech, BIN, "download", torrent, "-o", out_dir, "--bind", LEECH_IP, "--port", "0",
             "--peer", f"{SEED_IP}:{port}", "--json"] + flags,
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
    ap.add_argument("--placement", default="after,before", help="where the drop sits: after and/or before the cap")
    ap.add_argument("--timeout", type=float, default=120.0)
    a = ap.parse_args()
    if not os.path.exists(BIN):
        sys.exit("build first: cargo build --release")
    placements = a.placement.split(",")
    if any(p not in ("after", "before") for p in placements):
        sys.exit(f"--placement takes 'after', 'before' or both, not {a.placement!r}")
    cap = a.cap_mbit * 1e6 / 8
    size = int(a.size_mb * 1e6)
    with tempfile.TemporaryDirectory(prefix="ccfd-loss-") as tmp:
        seed_dir = os.path.join(tmp, "seed")
        os.makedirs(seed_dir)
        with open(os.path.join(seed_dir, "f.bin"), "wb") as f:
            f.write(os.urandom(size))
        torrent = os.path.join(tmp, "f.torrent")
        sh(BIN, "create", os.path.join(seed_dir, "f.bin"), "-o", torrent, "--piece-length", "262144")
        with Topology(a.cap_mbit) as topo:
            print(f"cap {a.cap_mbit} Mbit/s ({cap / 1e3:.0f} kB/s) on the router's egress, {size / 1e6:.1f} MB")
            for placement in placements:
                print(f"drop {placement} the cap")
                print(f"{'loss':>5} {'coded goodput':>14} {'/cap':>6} {'plain TCP':>12} {'/cap':>6} {'coded/plain':>12}")
                for loss in [int(x) for x in a.loss.split(",")]:
                    topo.set_loss(placement, loss)
                    row = {}
                    for coded in (True, False):
                        out_dir = os.path.join(tmp, f"dl-{placement}-{loss}-{coded}")
                        secs, coded_bytes = one_run(topo, torrent, seed_dir, out_dir, coded, a.timeout)
                        row[coded] = None if secs is None else size / secs
                        if coded and coded_bytes is not None and coded_bytes < size * 0.9:
                            print(f"  (coded run moved only {coded_bytes} bytes coded)")
                    fmt = lambda r: ("timeout", "-") if r is None else (f"{r / 1e3:.0f} kB/s", f"{r / cap:.2f}")
                    c, p = fmt(row[True]), fmt(row[False])
                    ratio = f"{row[True] / row[False]:.2f}" if row[True] and row[False] else "-"
                    print(f"{loss:>4}% {c[0]:>14} {c[1]:>6} {p[0]:>12} {p[1]:>6} {ratio:>12}")
                    sys.stdout.flush()


if __name__ == "__main__":
    main()
