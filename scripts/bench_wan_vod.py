#!/usr/bin/env python3
"""The VoD world (`ccfd-bt world`) over emulated access links: every world
peer and our client behind its own link (scripts/wan.py, ccfd-wanem), the
VoD server and tracker at the core. Coded cooperation against plain
BitTorrent (`world --no-coded`), the same seeded worlds: bytes fetched
from the VoD server (the penalty) and stalls.

    scripts/bench_wan_vod.py [--seeds 1,2] [--access-ms 40] [--loss 0.5]
                             [--down-mbit 8] [--up-mbit 2] [--hosts 40]

Hosts 127.70.0.2 .. 127.70.0.HOSTS each get an uplink and a downlink with
half of `--access-ms` one way and `--loss` percent each way; 127.70.0.1
(the world's tracker and VoD server) sits at the core, so what the
server sends a client passes only the client's downlink. The world's
own upload caps (70 kB/s a peer) stay. Needs root, iptables and
`cargo build --release --workspace`.
"""
import argparse
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wan  # noqa: E402

BIN = os.environ.get("CCFD_BT_BIN", os.path.join(wan.REPO, "target", "release", "ccfd-bt"))


def host(i):
    return f"127.70.0.{i}"


def run_world(ns, seed, coded, timeout):
    args = [BIN, "world", "--json", "--no-tui", "--seed", str(seed)] + ([] if coded else ["--no-coded"])
    out = subprocess.run(ns.command(*args), capture_output=True, text=True, timeout=timeout)
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        sys.exit(f"world printed no report (exit {out.returncode}): {out.stderr[-2000:]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", default="1,2")
    ap.add_argument("--access-ms", type=float, default=40)
    ap.add_argument("--loss", type=float, default=0.5)
    ap.add_argument("--down-mbit", type=float, default=8)
    ap.add_argument("--up-mbit", type=float, default=2)
    ap.add_argument("--hosts", type=int, default=40)
    ap.add_argument("--timeout", type=float, default=600)
    a = ap.parse_args()
    wan.require_builds(BIN)
    print(f"VoD world over access links {a.down_mbit:g}/{a.up_mbit:g} Mbit/s, {a.access_ms:g} ms to the core, "
          f"{a.loss:g}% loss each way; world defaults (3000 kB movie, R 60 kB/s, D 6 s, P 2 s, 10 peers + seed)")
    print(f"{'seed':>4} {'plain server kB':>16} {'stalls':>6} {'coded server kB':>16} {'stalls':>6} {'coded/plain':>12}")
    totals = {True: 0, False: 0}
    stalls = {True: 0, False: 0}
    hosts = [host(i) for i in range(2, a.hosts + 1)]
    with wan.WanNetns(wan.access_links(hosts, a.down_mbit, a.up_mbit, a.access_ms, a.loss), tag="wvod") as ns:
        for seed in [int(s) for s in a.seeds.split(",")]:
            row = {}
            for coded in (False, True):
                report = run_world(ns, seed, coded, a.timeout)
                row[coded] = report
                totals[coded] += report.get("server_bytes", 0)
                stalls[coded] += report.get("stalls", 0)
            p, c = row[False], row[True]
            ratio = c["server_bytes"] / p["server_bytes"] if p.get("server_bytes") else float("nan")
            print(f"{seed:>4} {p['server_bytes'] / 1e3:>16.1f} {p['stalls']:>6} {c['server_bytes'] / 1e3:>16.1f} "
                  f"{c['stalls']:>6} {ratio:>12.2f}", flush=True)
    if totals[False]:
        print(f"all  {totals[False] / 1e3:>16.1f} {stalls[False]:>6} {totals[True] / 1e3:>16.1f} {stalls[True]:>6} "
              f"{totals[True] / totals[False]:>12.2f}")


if __name__ == "__main__":
    main()
