#!/usr/bin/env python3
"""One seed, one leecher across an emulated internet path (scripts/wan.py,
ccfd-wanem): coded cooperation against the plain TCP wire and uTP, on a
grid of round trips and loss rates at one rate cap.

    scripts/bench_wan.py [--size-mib 16] [--rate-mbit 8] [--rtt 20,50,100]
                         [--loss 0,0.5,2] [--modes default,plain,coded,utp]
                         [--runs 1] [--timeout 240]

Modes (flags on the leecher; the seed runs with default flags):
  default    no flags: what a user gets (the coded rule of ccfd::coding_pays
             chooses per connection), TCP with CUBIC
  plain      --no-coded --no-utp: BitTorrent over the kernel's TCP, CUBIC
             (the default of Linux, Windows and macOS hosts)
  plain-bbr  the same with BBR as the sender's congestion control (this
             machine's default): BBR does not back off on random loss
  coded      --coded --no-utp: coded UDP packets, control on TCP
  utp        --no-tcp --no-coded: BitTorrent over our uTP (LEDBAT)
Loss applies to both directions; the queue holds one round trip at the
rate (at least 64 kB), drop-tail. Prints goodput (payload bytes over the
leecher's own download time) as a share of the link's rate, the Mathis
estimate for Reno/CUBIC at that loss, and coded / plain. Needs root, iptables and
`cargo build --release` (ccfd-bt and ccfd-wanem).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import wan  # noqa: E402

# CCFD_BT_BIN: another build (for example a saved copy, so a rebuild cannot change a running grid).
BIN = os.environ.get("CCFD_BT_BIN", os.path.join(wan.REPO, "target", "release", "ccfd-bt"))
# mode: (leecher flags, the kernel's TCP congestion control in the namespace)
MODES = {
    "default": ([], "cubic"),
    "plain": (["--no-coded", "--no-utp"], "cubic"),
    "plain-bbr": (["--no-coded", "--no-utp"], "bbr"),
    "coded": (["--coded", "--no-utp"], "cubic"),
    "utp": (["--no-tcp", "--no-coded"], "cubic"),
}
LOCAL = ["--no-dht", "--no-port-mapping"]


def one_run(ns, torrent, seed_dir, out_dir, flags, timeout):
    """Seeds at A and downloads at B once; returns (seconds, summary) or (None, {}) on timeout."""
    port = "16881"
    seed = subprocess.Popen(
        ns.command(BIN, "seed", torrent, "--data", seed_dir, "--bind", wan.A, "--port", port, *LOCAL),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.5)
        dl = subprocess.Popen(
            ns.command(BIN, "download", torrent, "-o", out_dir, "--bind", wan.B, "--port", "0",
                       "--peer", f"{wan.A}:{port}", "--json", *LOCAL, *flags),
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            out, _ = dl.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            dl.kill()
            dl.wait()
            return None, {}
        summary = json.loads(out.splitlines()[0]) if out.strip() else {}
        return (summary.get("seconds") if dl.returncode == 0 else None), summary
    finally:
        seed.terminate()
        try:
            seed.wait(timeout=5)
        except subprocess.TimeoutExpired:
            seed.kill()
            seed.wait()
        subprocess.run(["rm", "-rf", out_dir])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=float, default=16)
    ap.add_argument("--rate-mbit", type=float, default=8)
    ap.add_argument("--rtt", default="20,50,100")
    ap.add_argument("--loss", default="0,0.5,2")
    ap.add_argument("--modes", default="default,plain,plain-bbr,coded,utp")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=240)
    a = ap.parse_args()
    modes = a.modes.split(",")
    if any(m not in MODES for m in modes):
        sys.exit(f"--modes takes {','.join(MODES)}")
    wan.require_builds(BIN)
    size = int(a.size_mib * 1024 * 1024)
    cap = a.rate_mbit * 1e6 / 8
    with tempfile.TemporaryDirectory(prefix="ccfd-wan-") as tmp:
        seed_dir = os.path.join(tmp, "seed")
        os.makedirs(seed_dir)
        with open(os.path.join(seed_dir, "f.bin"), "wb") as f:
            f.write(os.urandom(size))
        torrent = os.path.join(tmp, "f.torrent")
        subprocess.run([BIN, "create", os.path.join(seed_dir, "f.bin"), "-o", torrent], check=True, capture_output=True)
        print(f"{a.size_mib:g} MiB, link {a.rate_mbit:g} Mbit/s ({cap / 1e3:.0f} kB/s) each way, "
              f"median of {a.runs}; goodput / link rate")
        head = f"{'RTT':>5} {'loss':>5} {'Mathis':>7} " + " ".join(f"{m:>8}" for m in modes)
        if "coded" in modes and "plain" in modes:
            head += f" {'coded/plain':>11}"
        print(head)
        ccs = sorted({MODES[m][1] for m in modes})
        with wan.AllowCongestionControls(ccs), wan.WanNetns(wan.path(wan.A, wan.B, a.rate_mbit, 20, 0), tag="bwan") as ns:
            for rtt in [float(x) for x in a.rtt.split(",")]:
                for loss in [float(x) for x in a.loss.split(",")]:
                    ns.set_links(wan.path(wan.A, wan.B, a.rate_mbit, rtt, loss))
                    share = {}
                    for mode in modes:
                        times = []
                        for r in range(a.runs):
                            flags, cc = MODES[mode]
                            ns.run("sysctl", "-qw", f"net.ipv4.tcp_congestion_control={cc}")
                            before = ns.stats().get("links", [{}])[0]
                            secs, summary = one_run(ns, torrent, seed_dir, os.path.join(tmp, f"dl-{mode}-{r}"), flags, a.timeout)
                            times.append(secs if secs else float("inf"))
                            time.sleep(1.1)  # the emulator writes its counters each second
                            after = ns.stats().get("links", [{}])[0]
                            sent = after.get("packets", 0) - before.get("packets", 0)
                            lost = after.get("lost", 0) - before.get("lost", 0)
                            dropped = after.get("queue_drops", 0) - before.get("queue_drops", 0)
                            print(f"  ({mode}: {secs or 0:.1f} s; seed to leecher {sent} packets, "
                                  f"{after.get('bytes', 0) - before.get('bytes', 0)} bytes, {lost} lost, "
                                  f"{dropped} queue drops)", file=sys.stderr)
                            if mode in ("default", "coded") and secs:
                                coded_share = summary.get("coded_bytes", 0) / size
                                print(f"  ({mode}: {coded_share:.0%} of the bytes came coded)", file=sys.stderr)
                        t = statistics.median(times)
                        share[mode] = 0.0 if t == float("inf") else size / t / cap
                    mathis = min(1.0, wan.mathis_mbit(1448, rtt, loss / 100) / a.rate_mbit) if loss else 1.0
                    row = f"{rtt:>4g}ms {loss:>4g}% {mathis:>7.2f} " + " ".join(
                        f"{share[m]:>8.2f}" if share[m] else f"{'timeout':>8}" for m in modes)
                    if "coded" in modes and "plain" in modes and share["plain"]:
                        row += f" {share['coded'] / share['plain']:>11.2f}"
                    print(row)
                    sys.stdout.flush()


if __name__ == "__main__":
    main()
