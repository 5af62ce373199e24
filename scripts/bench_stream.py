#!/usr/bin/python3
"""Streaming benchmark: how soon a player gets bytes, from launch and after
a seek, for ccfd-bt, webtorrent-cli and peerflix against the same swarm.

usage: scripts/bench_stream.py [--size-mib 64] [--seeds 3] [--seed-kbps 1500]
                               [--rate-kbps 500] [--runs 3] [--clients ccfd,webtorrent,peerflix]
                               [--node-modules DIR]

The swarm: the ccfd-bt tracker and SEEDS libtorrent seeds, each upload
capped at SEED_KBPS kB/s, on loopback. Each client in turn, from a clean
folder, is given the same magnet link (with the tracker in tr=) and serves
the movie over HTTP. Measured from the client's launch:
  first byte    a player's first read (bytes 0-65535) answered: metadata,
                peers and the first piece;
then, right after, a seek: a Range read at 50% of the file for one second
of playback (RATE_KBPS kB), timed to
  seek byte     its first byte, and
  seek 1 s      its last byte (what a player needs to resume).
Prints the medians and ccfd-bt's ratio to the best other client.
webtorrent-cli and peerflix come from npm (`npm install --ignore-scripts
webtorrent-cli@4 peerflix` in --node-modules' parent; webtorrent-cli 5
needs a native WebRTC module whose install script downloads a binary).
"""
import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_wire import make_payload, stop, wait_port  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NET = "127.0.73"
TRACKER_IP, TRACKER_PORT = f"{NET}.1", 7070
TRACKER = f"{TRACKER_IP}:{TRACKER_PORT}"
HTTP_PORT = 8899


def read_range(host, port, path, first, last, timeout):
    """GET bytes first..last; returns (seconds to the first body byte, seconds to the last), or None."""
    began = time.time()
    try:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        conn.request("GET", path, headers={"Range": f"bytes={first}-{last}"})
        resp = conn.getresponse()
        if resp.status not in (200, 206):
            return None
        want = last - first + 1
        got = resp.read(1)
        if not got:
            return None
        t_first = time.time() - began
        n = 1
        while n < want:
            chunk = resp.read(min(65536, want - n))
            if not chunk:
                break
            n += len(chunk)
        conn.close()
        return t_first, time.time() - began
    except (OSError, http.client.HTTPException):
        return None


def client_cmd(name, bin_path, magnet, out, modules, rate_kbps):
    """The command, and the URL path the movie is served at."""
    if name == "ccfd":
        return [bin_path, magnet, "--rate", str(rate_kbps), "--delay", "3", "--prefetch", "1", "--no-tui", "--json",
                "-o", os.path.join(out, "movie.mp4"), "--serve", f"127.0.0.1:{HTTP_PORT}", "--bind", f"{NET}.10", "--port", "0",
                "--no-dht", "--no-port-mapping"], "/movie.mp4"
    if name == "webtorrent":
        return ["node", os.path.join(modules, ".bin/webtorrent"), "download", magnet, "--port", str(HTTP_PORT),
                "--out", out, "--keep-seeding"], "/0/movie.mp4"
    if name == "peerflix":
        return ["node", os.path.join(modules, ".bin/peerflix"), magnet, "--port", str(HTTP_PORT),
                "--hostname", "127.0.0.1", "--path", out], "/"
    raise SystemExit(f"unknown client {name}")


def run_once(name, bin_path, magnet, size, workdir, modules, rate_kbps, log):
    out = os.path.join(workdir, f"out-{name}")
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    cmd, path = client_cmd(name, bin_path, magnet, out, modules, rate_kbps)
    began = time.time()
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        first = None
        while time.time() - began < 120 and proc.poll() is None:
            r = read_range("127.0.0.1", HTTP_PORT, path, 0, 65535, 60)
            if r:
                first = time.time() - began
                break
            time.sleep(0.05)
        if first is None:
            return None
        middle = size // 2
        seek = read_range("127.0.0.1", HTTP_PORT, path, middle, middle + rate_kbps * 1000 - 1, 120)
        if seek is None:
            return None
        return first, seek[0], seek[1]
    finally:
        stop(proc)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=64)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--seed-kbps", type=int, default=1500)
    ap.add_argument("--rate-kbps", type=int, default=500)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--clients", default="ccfd,webtorrent,peerflix")
    ap.add_argument("--node-modules", default=os.path.join(ROOT, "node_modules"))
    ap.add_argument("--dir", default="/tmp/ccfd-bench-stream")
    args = ap.parse_args()
    clients = args.clients.split(",")
    for c in clients:
        if c != "ccfd" and not os.path.exists(os.path.join(args.node_modules, ".bin", c)):
            sys.exit(f"{c} is not in {args.node_modules}/.bin (see the usage)")
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "ccfd-bt"], cwd=ROOT, check=True)
    bin_path = os.path.join(ROOT, "target/release/ccfd-bt")
    work = args.dir
    os.makedirs(os.path.join(work, "seed"), exist_ok=True)
    movie = os.path.join(work, "seed", "movie.mp4")
    size = args.size_mib << 20
    make_payload(movie, size)
    torrent = os.path.join(work, "movie.torrent")
    subprocess.run([bin_path, "create", movie, "-o", torrent, "--tracker", f"http://{TRACKER}/announce",
                    "--piece-length", str(256 * 1024)], check=True, stderr=subprocess.DEVNULL)
    info = subprocess.run([bin_path, "info", "--json", torrent], check=True, capture_output=True, text=True).stdout
    info_hash = json.loads(info)["info_hash"]
    magnet = f"magnet:?xt=urn:btih:{info_hash}&dn=movie.mp4&tr=http%3A%2F%2F{TRACKER.replace(':', '%3A')}%2Fannounce"
    log = open(os.path.join(work, "bench.log"), "w")
    procs = [subprocess.Popen([bin_path, "tracker", "--http", TRACKER], stdout=log, stderr=log)]
    try:
        wait_port(TRACKER_IP, TRACKER_PORT)
        for i in range(args.seeds):
            ip = f"{NET}.{2 + i}"
            procs.append(subprocess.Popen(["/usr/bin/python3", os.path.join(ROOT, "scripts/lt_peer.py"), "seed", torrent,
                                           os.path.join(work, "seed"), ip, "6881", "--upload-kbps", str(args.seed_kbps)],
                                          stdout=log, stderr=log))
            wait_port(ip, 6881)
        time.sleep(2)  # the seeds' first announce
        results = {c: [] for c in clients}
        for run in range(args.runs):
            for c in clients:
                r = run_once(c, bin_path, magnet, size, work, args.node_modules, args.rate_kbps, log)
                results[c].append(r)
                shown = "failed" if r is None else f"first byte {r[0]:6.2f} s  seek byte {r[1]:6.2f} s  seek 1 s {r[2]:6.2f} s"
                print(f"run {run + 1} {c:<11} {shown}", flush=True)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait()
    print(f"\n{args.size_mib} MiB movie, {args.seeds} libtorrent seeds at {args.seed_kbps} kB/s each, "
          f"one second of playback = {args.rate_kbps} kB, median of {args.runs}")
    print(f"{'client':<12} {'first byte s':>12} {'seek byte s':>12} {'seek 1 s':>10}  failed")
    med = {}
    for c in clients:
        ok = [r for r in results[c] if r]
        if ok:
            med[c] = [statistics.median(x[i] for x in ok) for i in range(3)]
            print(f"{c:<12} {med[c][0]:12.2f} {med[c][1]:12.2f} {med[c][2]:10.2f}  {len(results[c]) - len(ok)}")
        else:
            print(f"{c:<12} {'-':>12} {'-':>12} {'-':>10}  {len(results[c])}")
    others = [c for c in med if c != "ccfd"]
    if "ccfd" in med and others:
        for i, what in enumerate(["first byte", "seek byte", "seek 1 s"]):
            best = min(med[c][i] for c in others)
            print(f"ccfd-bt / best other, {what}: {med['ccfd'][i] / best:.2f}x (lower is better)")


if __name__ == "__main__":
    main()
