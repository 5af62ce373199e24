#!/usr/bin/env python3
"""A swarm in which every peer sits behind its own emulated access link
(scripts/wan.py, ccfd-wanem): one seed and N `--seed-after` leechers
through `ccfd-bt tracker`, separate processes, each host with an uplink and
a downlink of its own (asymmetric, as home lines are), joined at a core.
Coded cooperation against the plain TCP wire, in the same run.

    scripts/bench_wan_swarm.py [--n 6] [--size-mib 8] [--down-mbit 8]
                               [--up-mbit 2] [--access-ms 40] [--loss 0]
                               [--modes plain,coded,default,default-tcp] [--runs 1]

Modes: plain (--no-coded --no-utp), coded (--coded --no-utp), default
(no flags), default-tcp (--no-utp), utp (--no-tcp --no-coded); the same
flags for the seed and every leecher. `--access-ms` is each access link's
round trip to the core (so two peers
are 2x apart); `--loss` (percent) applies to every access link, both
directions. T* is the fluid bound max(F/u_seed, F/d, N*F/(u_seed + N*u)).
The time is from the leechers' start until the last one prints its
summary. Every leecher's file is checked against the seed's. Needs root,
iptables and `cargo build --release --workspace`.
"""
import argparse
import filecmp
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wan  # noqa: E402
from bench_wire import seed_payload, stop, wait_summaries  # noqa: E402

# CCFD_BT_BIN: another build (for example a saved copy, so a rebuild cannot change a running grid).
BIN = os.environ.get("CCFD_BT_BIN", os.path.join(wan.REPO, "target", "release", "ccfd-bt"))
LOCAL = ["--no-dht", "--no-port-mapping"]
MODES = {
    "default": [],
    "plain": ["--no-coded", "--no-utp"],
    "coded": ["--coded", "--no-utp"],
    "utp": ["--no-tcp", "--no-coded"],
    "default-tcp": ["--no-utp"],
}
TRACKER = "127.0.0.1"


def host(i):
    """Host 0 is the seed, 1..N the leechers."""
    return f"127.0.1.{i + 2}"


def wait_listening(ns, ip, port, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if ns.run("bash", "-c", f"exec 3<>/dev/tcp/{ip}/{port}", check=False).returncode == 0:
            return
        time.sleep(0.1)
    sys.exit(f"nothing listening on {ip}:{port} in the namespace")


def run_once(ns, work, n, size_mib, flags):
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    announce = f"http://{TRACKER}:7000/announce"
    seed_dir, payload, torrent, _ = seed_payload(BIN, work, size_mib, "--tracker", announce)
    procs = []
    log = lambda name: open(os.path.join(work, name), "w")
    try:
        procs.append(subprocess.Popen(ns.command(BIN, "tracker", "--http", f"{TRACKER}:7000"),
                                      stdout=subprocess.DEVNULL, stderr=log("tracker.log")))
        wait_listening(ns, TRACKER, 7000)
        seed = ns.command(BIN, "seed", torrent, "--data", seed_dir, "--bind", host(0), "--port", "6881", *LOCAL, *flags)
        procs.append(subprocess.Popen(seed, stdout=subprocess.DEVNULL, stderr=log("seed.log")))
        wait_listening(ns, host(0), 6881)
        outs = []
        start = time.time()
        for i in range(1, n + 1):
            out = os.path.join(work, f"leech{i}.json")
            cmd = ns.command(BIN, "download", torrent, "-o", os.path.join(work, f"leech{i}"), "--bind", host(i),
                             "--port", "6881", "--seed-after", "--json", *LOCAL, *flags)
            procs.append(subprocess.Popen(cmd, stdout=open(out, "w"), stderr=log(f"leech{i}.log")))
            outs.append(out)
        done = wait_summaries(outs, start, start + 30 * size_mib)
        if len(done) < n:
            return None, 0.0
        for i in range(1, n + 1):
            if not filecmp.cmp(payload, os.path.join(work, f"leech{i}", os.path.basename(payload)), shallow=False):
                sys.exit(f"leecher {i}'s copy differs; logs in {work}")
        coded = sum(s.get("coded_bytes", 0) for _, s in done.values()) / (n * (size_mib << 20))
        return max(t for t, _ in done.values()), coded
    finally:
        for p in reversed(procs):
            stop(p)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=6)
    ap.add_argument("--size-mib", type=int, default=8)
    ap.add_argument("--down-mbit", type=float, default=8)
    ap.add_argument("--up-mbit", type=float, default=2)
    ap.add_argument("--access-ms", type=float, default=40)
    ap.add_argument("--loss", type=float, default=0)
    ap.add_argument("--modes", default="plain,coded,default")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--dir", default=None)
    a = ap.parse_args()
    modes = a.modes.split(",")
    if any(m not in MODES for m in modes):
        sys.exit(f"--modes takes {','.join(MODES)}")
    wan.require_builds(BIN)
    size = a.size_mib << 20
    up, down = a.up_mbit * 1e6 / 8, a.down_mbit * 1e6 / 8
    t_star = max(size / up, size / down, a.n * size / (up + a.n * up))
    base = a.dir or tempfile.mkdtemp(prefix="ccfd-wan-swarm-")
    print(f"N = {a.n}, F = {a.size_mib} MiB, access links {a.down_mbit:g}/{a.up_mbit:g} Mbit/s, "
          f"{a.access_ms:g} ms to the core, {a.loss:g}% loss; T* = {t_star:.1f} s; TCP CUBIC")
    print(f"{'mode':<8} {'seconds':>8} {'T/T*':>6} {'coded share':>12}   runs (T/T*)")
    results = {}
    with wan.AllowCongestionControls(["cubic"]), \
            wan.WanNetns(wan.access_links([host(i) for i in range(a.n + 1)], a.down_mbit, a.up_mbit, a.access_ms, a.loss),
                         tag="wswarm") as ns:
        ns.run("sysctl", "-qw", "net.ipv4.tcp_congestion_control=cubic")
        for mode in modes:
            rows = [run_once(ns, os.path.join(base, f"{mode}-{r}"), a.n, a.size_mib, MODES[mode]) for r in range(a.runs)]
            secs = statistics.median(s if s else float("inf") for s, _ in rows)
            results[mode] = secs
            each = " ".join(f"{s / t_star:.3f}" if s else "timeout" for s, _ in rows)
            share = statistics.median(c for _, c in rows)
            print(f"{mode:<8} {secs:>8.1f} {secs / t_star:>6.3f} {share:>12.2f}   {each}", flush=True)
    if "coded" in results and "plain" in results:
        print(f"coded / plain time: {results['coded'] / results['plain']:.3f}")
    if not a.dir:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
