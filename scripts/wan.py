#!/usr/bin/env python3
"""The WAN emulator's harness: a private network namespace whose loopback
(MTU 1500, addresses on 127.0.0.0/8) carries every packet through
ccfd-wanem (wanem/), which holds it for the delay of an emulated link, caps
the link's rate behind a drop-tail queue, and drops a random or bursty share.

Used as a module by the WAN benches (scripts/bench_wan.py), and on its own
to validate the emulator against the kernel's tools:

    scripts/wan.py validate [--seconds 15]

  ping -U      the round trip follows the configured delays;
  iperf3 TCP   Reno and CUBIC goodput at 1% loss against the Mathis estimate
               MSS / RTT * sqrt(3/2) / sqrt(p) (uncapped link), and close to
               the cap on a capped link without loss;
  iperf3 UDP   loss share as configured, no reordering.

Needs root, iproute2, iptables and iperf3 (scripts/setup.sh), and
`cargo build --release -p ccfd-wanem`. The namespace and the emulator are
removed on exit, whatever happens.
"""
import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WANEM = os.path.join(REPO, "target", "release", "ccfd-wanem")


def sh(*args, check=True):
    return subprocess.run(args, check=check, capture_output=True, text=True)


def require_builds(*paths):
    """Exits with the build command if a binary a bench runs is missing."""
    for path in (WANEM, *paths):
        if not os.path.exists(path):
            sys.exit(f"{path} is missing; build first: cargo build --release --workspace")


def link(src, dst, rate_mbit=None, delay_ms=0.0, loss_pct=0.0, queue_bytes=None, jitter_ms=0.0, bursty=None):
    """One direction's --link spec. `bursty` is (p_good_to_bad, p_bad_to_good,
    loss_when_bad) for Gilbert-Elliott loss instead of `loss_pct`."""
    parts = []
    if src:
        parts.append(f"from={src}")
    if dst:
        parts.append(f"to={dst}")
    if rate_mbit:
        parts.append(f"rate={rate_mbit}mbit")
    parts.append(f"delay={delay_ms}ms")
    if jitter_ms:
        parts.append(f"jitter={jitter_ms}ms")
    if bursty:
        parts.append("loss=ge:{}:{}:{}".format(*bursty))
    elif loss_pct:
        parts.append(f"loss={loss_pct}%")
    if queue_bytes:
        parts.append(f"queue={int(queue_bytes)}")
    return ",".join(parts)


def path(a, b, rate_mbit, rtt_ms, loss_pct, queue_bytes=None):
    """Both directions of a symmetric path between addresses a and b: half
    the round trip each way, the same loss each way (the ACKs and the
    receiver's feedback face it too). The queue defaults to one round trip
    at the rate (at least 64 kB), a common router sizing."""
    if queue_bytes is None and rate_mbit:
        queue_bytes = max(64_000, rate_mbit * 1e6 / 8 * rtt_ms / 1e3)
    one_way = rtt_ms / 2
    return [link(a, b, rate_mbit, one_way, loss_pct, queue_bytes), link(b, a, rate_mbit, one_way, loss_pct, queue_bytes)]


def access_links(hosts, down_mbit, up_mbit, access_ms, loss_pct):
    """An access link per host address: an uplink and a downlink, each with
    half of `access_ms` one way, `loss_pct` and a queue of one round trip
    at its rate (at least 64 kB). Every uplink comes first, then every
    downlink: a packet passes its sender's uplink, then its receiver's
    downlink; an address not in `hosts` sits at the core."""
    one_way = access_ms / 2
    queue = lambda mbit: max(64_000, mbit * 1e6 / 8 * access_ms * 2 / 1e3)
    ups = [link(h, None, up_mbit, one_way, loss_pct, queue(up_mbit)) for h in hosts]
    downs = [link(None, h, down_mbit, one_way, loss_pct, queue(down_mbit)) for h in hosts]
    return ups + downs


class WanNetns:
    """A namespace whose loopback runs through ccfd-wanem; `links` are
    --link specs. Use as a context manager; `set_links` restarts the
    emulator with other links between runs."""

    def __init__(self, links, tag="wan"):
        self.name = f"ccfd-{tag}-{os.getpid()}"
        self.links = links
        self.emulator = None
        self.stats_dir = tempfile.mkdtemp(prefix="ccfd-wanem-")
        self.stats_path = os.path.join(self.stats_dir, "stats.json")

    def __enter__(self):
        # A bench stopped with SIGTERM still removes its namespace.
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        if not os.path.exists(WANEM):
            raise SystemExit("build the emulator first: cargo build --release -p ccfd-wanem")
        sh("ip", "netns", "add", self.name)
        try:
            self.run("ip", "link", "set", "lo", "mtu", "1500", "up")
            # Every IPv4 packet on the loopback goes through the queue; the
            # emulator lets through at once what no link matches.
            self.run("iptables", "-t", "mangle", "-A", "PREROUTING", "-i", "lo", "-j", "NFQUEUE", "--queue-num", "0")
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self):
        # Counters start afresh with each emulator: no stale file in between.
        if os.path.exists(self.stats_path):
            os.remove(self.stats_path)
        args = ["ip", "netns", "exec", self.name]
        # Real-time priority where allowed: verdicts on time while the clients work.
        if shutil.which("chrt"):
            args += ["chrt", "-f", "20"]
        args += [WANEM, "--stats", self.stats_path]
        for spec in self.links:
            args += ["--link", spec]
        self.emulator = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.emulator.stdout.readline().strip()
        if line != "ready":
            err = self.emulator.stderr.read()
            self.emulator.wait()
            self.emulator = None
            raise RuntimeError(f"ccfd-wanem did not start: {line} {err}")

    def _stop(self):
        if self.emulator is not None:
            self.emulator.terminate()
            try:
                self.emulator.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.emulator.kill()
                self.emulator.wait()
            self.emulator = None

    def set_links(self, links):
        """Restarts the emulator with other links (fresh counters)."""
        self._stop()
        self.links = links
        self._start()

    def stats(self):
        """The emulator's counters (written every second and at exit)."""
        try:
            with open(self.stats_path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def command(self, *args):
        return ["ip", "netns", "exec", self.name, *args]

    def run(self, *args, check=True):
        return sh(*self.command(*args), check=check)

    def __exit__(self, *exc):
        self._stop()
        sh("ip", "netns", "del", self.name, check=False)
        shutil.rmtree(self.stats_dir, ignore_errors=True)


A, B = "127.0.0.2", "127.0.0.3"

ALLOWED_CC = "/proc/sys/net/ipv4/tcp_allowed_congestion_control"


class AllowCongestionControls:
    """A namespace may only pick a congestion control the host allows
    (tcp_allowed_congestion_control is global). Adds those of `names` the
    host lacks for the run, and takes exactly those out again on exit (not
    a saved copy of the whole list: two benches at once would put back
    each other's additions)."""

    def __init__(self, names):
        self.names = names
        self.added = []

    def __enter__(self):
        with open(ALLOWED_CC) as f:
            allowed = f.read().split()
        self.added = [n for n in self.names if n not in allowed]
        if self.added:
            with open(ALLOWED_CC, "w") as f:
                f.write(" ".join(allowed + self.added))
        return self

    def __exit__(self, *exc):
        if self.added:
            with open(ALLOWED_CC) as f:
                allowed = f.read().split()
            with open(ALLOWED_CC, "w") as f:
                f.write(" ".join(n for n in allowed if n not in self.added))


def ping_rtt(ns, count=10):
    out = ns.run("ping", "-U", "-n", "-q", "-c", str(count), "-i", "0.1", "-I", A, B).stdout
    # rtt min/avg/max/mdev = 40.296/40.395/40.461/0.061 ms
    line = [l for l in out.splitlines() if "min/avg/max" in l][0]
    return [float(x) for x in line.split("=")[1].split()[0].split("/")][:3]


def iperf(ns, seconds, extra=()):
    server = subprocess.Popen(ns.command("iperf3", "-s", "-B", B, "-1"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.4)
        out = ns.run("iperf3", "-c", B, "-B", A, "-t", str(seconds), "-J", *extra, check=False).stdout
        return json.loads(out)
    finally:
        try:
            server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def mathis_mbit(mss, rtt_ms, loss):
    return mss * 8 / (rtt_ms / 1e3) * math.sqrt(1.5) / math.sqrt(loss) / 1e6


def validate(seconds):
    print("ping -U (user-to-user round trip; plain ping stamps the reply before the emulator holds it)")
    print(f"{'set RTT ms':>10} {'min':>7} {'avg':>7} {'max':>7}")
    with WanNetns(path(A, B, None, 0, 0)) as ns:
        for rtt in (20, 50, 100):
            ns.set_links(path(A, B, None, rtt, 0))
            lo, avg, hi = ping_rtt(ns)
            print(f"{rtt:>10} {lo:>7.2f} {avg:>7.2f} {hi:>7.2f}")
        print()
        print(f"iperf3 TCP, {seconds} s; loss on both directions; uncapped (1 Gbit/s) unless said")
        print(f"{'path':<28} {'cc':<6} {'Mbit/s':>8} {'Mathis':>8} {'ratio':>6} {'retrans':>8} {'loss seen':>9}")
        rows = [(50, 1.0, None), (100, 1.0, None), (50, 0.1, None), (50, 0.0, 8), (100, 0.0, 8)]
        for rtt, loss, cap in rows:
            ns.set_links(path(A, B, cap or 1000, rtt, loss))
            for cc in ("reno", "cubic"):
                run = iperf(ns, seconds, ("-C", cc))
                end = run.get("end", {})
                mbit = end.get("sum_received", {}).get("bits_per_second", 0) / 1e6
                retrans = end.get("sum_sent", {}).get("retransmits", 0)
                stats = ns.stats().get("links", [{}])
                seen = stats[0].get("lost", 0) / max(1, stats[0].get("packets", 1))
                label = f"RTT {rtt} ms, {loss}% loss" + (f", cap {cap} Mbit/s" if cap else "")
                if loss:
                    est = mathis_mbit(1448, rtt, loss / 100)
                    print(f"{label:<28} {cc:<6} {mbit:>8.2f} {est:>8.2f} {mbit / est:>6.2f} {retrans:>8} {seen:>9.4f}")
                else:
                    print(f"{label:<28} {cc:<6} {mbit:>8.2f} {'cap':>8} {mbit / cap:>6.2f} {retrans:>8} {seen:>9.4f}")
                sys.stdout.flush()
        print()
        print(f"iperf3 UDP at 6 Mbit/s through 8 Mbit/s, RTT 50 ms, {seconds} s")
        print(f"{'loss set':<22} {'lost':>8} {'out of order':>13}")
        for label, links in (
            ("1% random", path(A, B, 8, 50, 1.0)),
            ("GE 1%->25%, 50% bad", [link(A, B, 8, 25, bursty=(0.01, 0.25, 0.5), queue_bytes=64000), link(B, A, 8, 25)]),
        ):
            ns.set_links(links)
            run = iperf(ns, seconds, ("-u", "-b", "6M", "-l", "1200"))
            end = run.get("end", {})
            lost = end.get("sum_received", {}).get("lost_percent", float("nan"))
            reordered = sum(s.get("udp", {}).get("out_of_order", 0) for s in end.get("streams", []))
            print(f"{label:<22} {lost:>7.2f}% {reordered:>13}")
        st = ns.stats()
        print()
        print(f"emulator lateness: mean {st.get('late_mean_us', 0):.0f} us, max {st.get('late_max_us', 0):.0f} us")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("validate")
    v.add_argument("--seconds", type=int, default=15)
    a = ap.parse_args()
    if a.cmd == "validate":
        validate(a.seconds)


if __name__ == "__main__":
    main()
