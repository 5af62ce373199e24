#!/usr/bin/python3
"""DHT benchmark: a trackerless magnet in a loopback DHT of libtorrent nodes,
ccfd-bt against libtorrent, same run.

usage: scripts/bench_dht.py [--nodes 24] [--size-mib 16] [--runs 3]

Starts scripts/lt_dht.py (NODES libtorrent DHT nodes and a libtorrent
seed that announces the torrent), then, in turn, each leecher from a cold
start: an empty routing table and one bootstrap node (the first DHT node),
given only `magnet:?xt=urn:btih:HASH`. Times from launch: the first
connected peer, the metadata, and the last verified piece. ccfd-bt says
the first two on stderr ("first peer connected", "metadata received"),
libtorrent through scripts/lt_magnet.py. Prints the medians and ccfd-bt's
ratio to libtorrent (target: first peer no later than libtorrent).
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_wire import seed_payload, stop  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NET = "127.0.72"
DHT_PORT = 7000


def timed_lines(stream, marks, started, events):
    """Stamps the first line containing each mark."""
    for line in stream:
        for key, mark in marks.items():
            if key not in events and mark in line:
                events[key] = time.time() - started


def run_leecher(client, bin_path, info_hash, out, ip, state, timeout):
    bootstrap = f"{NET}.10:{DHT_PORT}"
    if client == "ccfd":
        cmd = [bin_path, "download", f"magnet:?xt=urn:btih:{info_hash}", "-o", out, "--bind", ip, "--port", "7000",
               "--dht-bootstrap", bootstrap, "--state-dir", state, "--json", "--no-port-mapping", "--no-coded"]
        env = dict(os.environ, RUST_LOG="ccfd_bt=info", NO_COLOR="1")
        marks_err = {"peer": "first peer connected", "metadata": "metadata received"}
        marks_out = {"done": '"event":"complete"'}
    else:
        cmd = ["/usr/bin/python3", os.path.join(ROOT, "scripts/lt_magnet.py"), info_hash, out, ip, "7000", bootstrap]
        env = dict(os.environ)
        marks_err = {}
        marks_out = {"peer": "peer", "metadata": "metadata", "done": "done"}
    events = {}
    started = time.time()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    readers = [threading.Thread(target=timed_lines, args=(proc.stdout, marks_out, started, events), daemon=True),
               threading.Thread(target=timed_lines, args=(proc.stderr, marks_err, started, events), daemon=True)]
    for r in readers:
        r.start()
    deadline = started + timeout
    while "done" not in events and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    stop(proc)
    for r in readers:
        r.join(2)
    if "done" not in events:
        raise RuntimeError(f"{client} did not complete in {timeout} s (saw {events})")
    return events


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=24)
    ap.add_argument("--size-mib", type=int, default=16)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--timeout", type=int, default=120)
    ap.add_argument("--dir", default="/tmp/ccfd-bench-dht")
    args = ap.parse_args()

    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "ccfd-bt"], cwd=ROOT, check=True)
    bin_path = os.path.join(ROOT, "target/release/ccfd-bt")
    work = args.dir
    seed_dir, payload, torrent, info_hash = seed_payload(bin_path, work, args.size_mib)

    logs = open(os.path.join(work, "dht.log"), "w")
    dht = subprocess.Popen(["/usr/bin/python3", os.path.join(ROOT, "scripts/lt_dht.py"), NET, str(args.nodes),
                            "--seed", torrent, seed_dir], stdout=subprocess.PIPE, stderr=logs, text=True)
    results = {"ccfd": [], "libtorrent": []}
    try:
        for line in dht.stdout:
            if line.startswith("ready"):
                break
        else:
            sys.exit("the libtorrent DHT did not come up")
        time.sleep(5)  # let the seed's announce reach the nodes nearest the hash
        host = 100
        for run in range(args.runs):
            for client in results:
                host += 1
                out = os.path.join(work, f"out-{client}")
                shutil.rmtree(out, ignore_errors=True)
                os.makedirs(out)
                with tempfile.TemporaryDirectory(prefix="ccfd-dht-state-") as state:
                    ev = run_leecher(client, bin_path, info_hash, out, f"{NET}.{host}", state, args.timeout)
                if subprocess.run(["cmp", "-s", payload, os.path.join(out, "payload.bin")]).returncode != 0:
                    raise RuntimeError(f"{client} run {run + 1}: bytes differ")
                shutil.rmtree(out)
                results[client].append(ev)
                name = "ccfd-bt" if client == "ccfd" else client
                print(f"run {run + 1} {name:11s} first peer {ev.get('peer', float('nan')):6.2f} s  metadata "
                      f"{ev.get('metadata', float('nan')):6.2f} s  complete {ev['done']:6.2f} s", flush=True)
    finally:
        dht.terminate()
        dht.wait()

    print()
    print(f"trackerless magnet, {args.size_mib} MiB, {args.nodes} libtorrent DHT nodes + 1 libtorrent seed, "
          f"cold start from one bootstrap node, median of {args.runs}")
    print(f"{'leecher':12s} {'first peer s':>13s} {'metadata s':>11s} {'complete s':>11s}")
    med = {}
    for client, rows in results.items():
        m = {k: statistics.median(r[k] for r in rows if k in r) for k in ("peer", "metadata", "done")}
        med[client] = m
        name = "ccfd-bt" if client == "ccfd" else client
        print(f"{name:12s} {m['peer']:13.2f} {m['metadata']:11.2f} {m['done']:11.2f}")
    a, b = med["ccfd"], med["libtorrent"]
    print(f"ccfd-bt / libtorrent: first peer {a['peer'] / b['peer']:.2f}x, complete {a['done'] / b['done']:.2f}x "
          "(target: first peer <= 1.00x)")


if __name__ == "__main__":
    main()
