#!/usr/bin/python3
"""uTP and encryption benchmark: one libtorrent seeder (TCP and uTP on), one
leecher at a time, same run.

usage: scripts/bench_utp.py [--size-mib 256] [--runs 3] [--path plain|loss|delay]
                            [--loss-pct 1] [--delay-ms 25]
                            [--clients ccfd-utp,lt-utp,ccfd-tcp,ccfd-rc4,lt-tcp,lt-rc4]

Leechers (each dials the seeder directly; no tracker):
  ccfd-utp  ccfd-bt --no-tcp                 lt-utp  libtorrent, uTP only
  ccfd-tcp  ccfd-bt --no-utp                 lt-tcp  libtorrent, TCP only
  ccfd-rc4  ccfd-bt --no-utp --encryption require
  lt-rc4    libtorrent, TCP only, encryption forced (RC4)
Paths:
  plain  loopback as it is.
  loss   everything runs in a network namespace of its own whose loopback
         drops --loss-pct % of all packets, both ways (nftables).
  delay  uTP rows only: the leecher dials a user-space UDP relay
         (examples/udp_delay_relay.rs) that holds every datagram --delay-ms
         each way (this kernel has no netem).
Prints per leecher the median MB/s (payload over the time from start to
the client's own "complete"), the median CPU-seconds per GB (user + system
of the leecher, from wait4) and peak RSS, then the ratios the targets name:
ccfd uTP / libtorrent uTP (MB/s and CPU) and ccfd RC4 / ccfd plain TCP.
Needs scripts/setup.sh. Builds ccfd-bt and the relay first.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_wire import Leecher, run_once, seed_payload, wait_port  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NET = "127.0.71"
SEED = f"{NET}.2"
RELAY = f"{NET}.3"
PORT = 6881
LT_PEER = os.path.join(ROOT, "scripts/lt_peer.py")

LEECHERS = {
    "ccfd-utp": ("ccfd-bt uTP", "ccfd", ["--no-tcp"], True),
    "lt-utp": ("libtorrent uTP", "lt", ["--utp-only"], True),
    "ccfd-tcp": ("ccfd-bt TCP", "ccfd", ["--no-utp"], False),
    "ccfd-rc4": ("ccfd-bt TCP+RC4", "ccfd", ["--no-utp", "--encryption", "require"], False),
    "lt-tcp": ("libtorrent TCP", "lt", [], False),
    "lt-rc4": ("libtorrent TCP+RC4", "lt", ["--encrypted"], False),
}


def leecher(key, bin_path, torrent, out, ip, peer):
    name, kind, flags, _ = LEECHERS[key]
    if kind == "ccfd":
        cmd = [bin_path, "download", torrent, "-o", out, "--bind", ip, "--port", str(PORT), "--json",
               "--peer", peer, "--no-dht", "--no-port-mapping", "--no-coded"] + flags
        return Leecher(name, cmd, line="{")
    return Leecher(name, ["/usr/bin/python3", LT_PEER, "download", torrent, out, ip, str(PORT), peer] + flags, line="done")


def inside_lossy_namespace(args):
    """Re-runs this script inside a namespace whose loopback drops packets."""
    ns = f"ccfd-utp-bench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        def ns_run(*cmd):
            subprocess.run(["ip", "netns", "exec", ns, *cmd], check=True)
        ns_run("ip", "link", "set", "lo", "up")
        ns_run("nft", "add", "table", "inet", "bench")
        ns_run("nft", "add chain inet bench in { type filter hook input priority 0; }")
        per_mille = int(round(args.loss_pct * 10))
        ns_run("nft", f"add rule inet bench in ip saddr {NET}.0/24 numgen random mod 1000 < {per_mille} drop")
        argv = [a for a in sys.argv[1:]]
        status = subprocess.run(["ip", "netns", "exec", ns, sys.executable, os.path.abspath(__file__), *argv, "--inside"]).returncode
        sys.exit(status)
    finally:
        subprocess.run(["ip", "netns", "del", ns])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--piece-kib", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--path", choices=["plain", "loss", "delay"], default="plain")
    ap.add_argument("--loss-pct", type=float, default=1.0)
    ap.add_argument("--delay-ms", type=int, default=25)
    ap.add_argument("--clients", default=",".join(LEECHERS))
    ap.add_argument("--dir", default="/tmp/ccfd-bench-utp")
    ap.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if not args.inside:
        subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "ccfd-bt", "--example", "udp_delay_relay"],
                       cwd=ROOT, check=True)
        if args.path == "loss":
            inside_lossy_namespace(args)
    bin_path = os.path.join(ROOT, "target/release/ccfd-bt")
    relay_bin = os.path.join(ROOT, "target/release/examples/udp_delay_relay")
    clients = [c for c in args.clients.split(",") if c]
    for c in clients:
        if c not in LEECHERS:
            sys.exit(f"unknown client {c}; use {','.join(LEECHERS)}")
    if args.path == "delay":
        clients = [c for c in clients if LEECHERS[c][3]]

    work = args.dir
    size = args.size_mib << 20
    seed_dir, payload, torrent, _ = seed_payload(bin_path, work, args.size_mib, "--piece-length", str(args.piece_kib * 1024))

    procs = []
    logs = open(os.path.join(work, "bench.log"), "w")
    try:
        seeder = subprocess.Popen(["/usr/bin/python3", LT_PEER, "seed", torrent, seed_dir, SEED, str(PORT), "--utp"],
                                  stdout=logs, stderr=logs)
        procs.append(seeder)
        wait_port(SEED, PORT)
        time.sleep(3)  # let it finish checking
        peer = f"{SEED}:{PORT}"
        if args.path == "delay":
            relay = subprocess.Popen([relay_bin, f"{RELAY}:{PORT}", peer, str(args.delay_ms)], stdout=logs, stderr=logs)
            procs.append(relay)
            time.sleep(0.5)
            peer = f"{RELAY}:{PORT}"

        results = {c: [] for c in clients}
        host = 10
        for run in range(args.runs):
            for client in clients:
                host += 1
                out = os.path.join(work, f"out-{client}")
                shutil.rmtree(out, ignore_errors=True)
                os.makedirs(out)
                lee = leecher(client, bin_path, torrent, out, f"{NET}.{host}", peer)
                secs, cpu, rss = run_once(lee, logs)
                if subprocess.run(["cmp", "-s", payload, os.path.join(out, "payload.bin")]).returncode != 0:
                    raise RuntimeError(f"{lee.name} run {run + 1}: bytes differ")
                shutil.rmtree(out)
                results[client].append((size / 1e6 / secs, cpu / (size / 1e9), rss))
                print(f"run {run + 1} {lee.name:18s} {size / 1e6 / secs:7.1f} MB/s  {cpu / (size / 1e9):5.2f} CPU-s/GB  {rss:6.1f} MiB",
                      flush=True)
    finally:
        for p in procs:
            p.terminate()
            p.wait()

    path = {"plain": "loopback", "loss": f"loopback dropping {args.loss_pct}% both ways",
            "delay": f"UDP relay holding {args.delay_ms} ms each way"}[args.path]
    print()
    print(f"{args.size_mib} MiB, {args.piece_kib} KiB pieces, libtorrent seeder (TCP+uTP), {path}, median of {args.runs}")
    print(f"{'leecher':18s} {'MB/s':>8s} {'CPU-s/GB':>9s} {'peak RSS MiB':>13s}")
    med = {}
    for client, rows in results.items():
        mbps = statistics.median(r[0] for r in rows)
        cpu = statistics.median(r[1] for r in rows)
        med[client] = (mbps, cpu)
        print(f"{LEECHERS[client][0]:18s} {mbps:8.1f} {cpu:9.2f} {max(r[2] for r in rows):13.1f}")
    if "ccfd-utp" in med and "lt-utp" in med:
        (a, ac), (b, bc) = med["ccfd-utp"], med["lt-utp"]
        print(f"ccfd-bt uTP / libtorrent uTP: {a / b:.2f}x MB/s, {ac / bc:.2f}x CPU per GB (target >= 0.90x MB/s, <= 1.00x CPU)")
    if "ccfd-rc4" in med and "ccfd-tcp" in med:
        print(f"ccfd-bt RC4 / plain TCP: {med['ccfd-rc4'][0] / med['ccfd-tcp'][0]:.2f}x MB/s (target >= 0.90x)")


if __name__ == "__main__":
    main()
