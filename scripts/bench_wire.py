#!/usr/bin/python3
"""Wire benchmark: one libtorrent seeder, several leechers, same run.

usage: scripts/bench_wire.py [--size-mib 1024] [--piece-kib 256] [--runs 3]
                             [--clients ccfd,aria2,libtorrent,ctorrent] [--dir DIR]

Seeds a random payload from python3-libtorrent through opentracker on
loopback and downloads it with each leecher in turn, `--runs` times each,
checking the bytes. Prints per leecher the median MB/s (payload bytes over
the time from start to the client's own "complete" signal), the median
CPU-seconds per GB (user + system of the leecher process, from wait4), and
the peak RSS; then ccfd-bt's ratio to the best other. Seeder and leecher
share the machine's cores, so CPU per GB is the portable figure.
Needs scripts/setup.sh (and ctorrent, if listed). Builds ccfd-bt first.
"""
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NET = "127.0.70"


def sh(*cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def wait_port(ip, port, timeout=30):
    import socket
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection((ip, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listening on {ip}:{port}")


def wait_summaries(outs, start, deadline):
    """Waits until each leecher's --json file (OUTS) holds its summary line,
    or DEADLINE passes; returns {index: (seconds since START, summary)}."""
    done = {}
    while len(done) < len(outs) and time.time() < deadline:
        for i, out in enumerate(outs):
            if i not in done:
                with open(out) as f:
                    line = f.readline()
                if line.endswith("\n"):
                    done[i] = (time.time() - start, json.loads(line))
        time.sleep(0.05)
    return done


def make_payload(path, size):
    if os.path.exists(path) and os.path.getsize(path) == size:
        return
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 1 << 24)
            f.write(os.urandom(n))
            left -= n


def seed_payload(bin_path, work, size_mib, *create_args):
    """A random payload of SIZE_MIB MiB in WORK/seed and its torrent, made by
    `ccfd-bt create` with CREATE_ARGS; returns (seed dir, payload, torrent, info-hash hex)."""
    seed_dir = os.path.join(work, "seed")
    os.makedirs(seed_dir, exist_ok=True)
    payload = os.path.join(seed_dir, "payload.bin")
    make_payload(payload, size_mib << 20)
    torrent = os.path.join(work, "payload.torrent")
    created = subprocess.run([bin_path, "create", payload, "-o", torrent, *create_args], check=True, capture_output=True, text=True)
    return seed_dir, payload, torrent, created.stderr.strip().split()[-1]


def stop(proc, grace=10):
    """Ends a child we started: SIGTERM, then SIGKILL after GRACE seconds."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Leecher:
    """One leecher run: a command, and how it says it is complete."""

    def __init__(self, name, cmd, marker=None, line=None):
        self.name, self.cmd, self.marker, self.line = name, cmd, marker, line


def leecher(client, bin_path, torrent, out, ip, marker):
    port = "6881"
    if client == "ccfd":
        return Leecher("ccfd-bt", [bin_path, "download", torrent, "-o", out, "--bind", ip, "--port", port, "--json"], line="{")
    if client == "aria2":
        hook = marker + ".sh"
        with open(hook, "w") as f:
            f.write(f"#!/bin/sh\ntouch {marker}\n")
        os.chmod(hook, 0o755)
        return Leecher("aria2", [
            "aria2c", "--enable-dht=false", "--enable-dht6=false", "--bt-enable-lpd=false",
            "--enable-peer-exchange=false", "--file-allocation=none", "--seed-time=0",
            "--summary-interval=0", "--console-log-level=warn", f"--listen-port={port}",
            f"--interface={ip}", f"--dir={out}", f"--on-bt-download-complete={hook}", torrent], marker=marker)
    if client == "libtorrent":
        return Leecher("libtorrent", ["/usr/bin/python3", os.path.join(ROOT, "scripts/lt_peer.py"), "download", torrent, out, ip, port], line="done")
    if client == "ctorrent":
        return Leecher("ctorrent", ["ctorrent", "-e", "0", "-i", ip, "-p", port, "-s", os.path.join(out, "payload.bin"),
                                    "-X", f"touch {marker}", torrent], marker=marker)
    sys.exit(f"unknown client {client}")


def reap(pid, block):
    """wait4 on our child: (exited, status, rusage); never lets Popen reap it first."""
    got, status, usage = os.wait4(pid, 0 if block else os.WNOHANG)
    return got == pid, status, usage


def run_once(lee, log):
    start = time.time()
    exited = None
    proc = subprocess.Popen(lee.cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE if lee.line else log,
                            stderr=log, text=True)
    done_at = None
    if lee.line:
        for text in proc.stdout:
            if text.startswith(lee.line):
                done_at = time.time()
                break
        proc.stdout.close()
    else:
        while not os.path.exists(lee.marker):
            exited = reap(proc.pid, False)
            if exited[0]:
                break
            time.sleep(0.01)
        if os.path.exists(lee.marker):
            done_at = time.time()
    # Completion is what we time; a client that lingers afterwards is stopped.
    deadline = time.time() + 10
    while not (exited and exited[0]) and time.time() < deadline:
        exited = reap(proc.pid, False)
        time.sleep(0.05)
    if not exited[0]:
        # os.kill, not Popen.send_signal: the latter polls and could reap the child first.
        os.kill(proc.pid, signal.SIGINT)
        exited = reap(proc.pid, True)
    proc.returncode = 0  # reaped here; keep Popen from waiting on it
    _, status, usage = exited
    if done_at is None:
        raise RuntimeError(f"{lee.name} never completed (status {status})")
    return done_at - start, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024.0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--piece-kib", type=int, default=256)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--clients", default="ccfd,aria2,libtorrent,ctorrent")
    ap.add_argument("--dir", default="/tmp/ccfd-bench-wire")
    args = ap.parse_args()

    sh("cargo", "build", "--release", "--quiet", cwd=ROOT)
    bin_path = os.path.join(ROOT, "target/release/ccfd-bt")
    clients = [c for c in args.clients.split(",") if c]
    if "ctorrent" in clients and shutil.which("ctorrent") is None:
        print("ctorrent not installed (apt-get install ctorrent): skipped")
        clients.remove("ctorrent")

    work = args.dir
    size = args.size_mib << 20
    seed_dir, payload, torrent, info_hash = seed_payload(
        bin_path, work, args.size_mib, "--piece-length", str(args.piece_kib * 1024), "--tracker", f"http://{NET}.1:6969/announce")

    procs = []
    logs = open(os.path.join(work, "bench.log"), "w")
    try:
        ot = os.path.join(work, "opentracker")
        os.makedirs(ot, exist_ok=True)
        with open(os.path.join(ot, "whitelist"), "w") as f:
            f.write(info_hash + "\n")
        procs.append(subprocess.Popen(["opentracker", "-i", f"{NET}.1", "-p", "6969", "-P", "6969", "-d", ot, "-w", "whitelist"],
                                      stdout=logs, stderr=logs))
        wait_port(f"{NET}.1", 6969)
        seeder = subprocess.Popen(["/usr/bin/python3", os.path.join(ROOT, "scripts/lt_peer.py"), "seed", torrent, seed_dir, f"{NET}.2", "6881"],
                                  stdout=logs, stderr=logs)
        procs.append(seeder)
        wait_port(f"{NET}.2", 6881)
        time.sleep(3)  # let it finish checking and announce

        results = {c: [] for c in clients}
        host = 10
        for run in range(args.runs):
            for client in clients:
                host += 1
                out = os.path.join(work, f"out-{client}")
                shutil.rmtree(out, ignore_errors=True)
                os.makedirs(out)
                marker = os.path.join(work, f"done-{client}")
                if os.path.exists(marker):
                    os.remove(marker)
                lee = leecher(client, bin_path, torrent, out, f"{NET}.{host}", marker)
                secs, cpu, rss = run_once(lee, logs)
                got = os.path.join(out, "payload.bin")
                if subprocess.run(["cmp", "-s", payload, got]).returncode != 0:
                    raise RuntimeError(f"{lee.name} run {run + 1}: bytes differ")
                shutil.rmtree(out)
                results[client].append((size / 1e6 / secs, cpu / (size / 1e9), rss))
                print(f"run {run + 1} {lee.name:11s} {size / 1e6 / secs:7.1f} MB/s  {cpu / (size / 1e9):5.2f} CPU-s/GB  {rss:6.1f} MiB", flush=True)
    finally:
        for p in procs:
            p.terminate()
            p.wait()

    print()
    print(f"{args.size_mib} MiB, {args.piece_kib} KiB pieces, libtorrent seeder, median of {args.runs}")
    print(f"{'leecher':12s} {'MB/s':>8s} {'CPU-s/GB':>9s} {'peak RSS MiB':>13s}")
    medians = {}
    for client, rows in results.items():
        mbps = statistics.median(r[0] for r in rows)
        cpu = statistics.median(r[1] for r in rows)
        rss = max(r[2] for r in rows)
        medians[client] = mbps
        name = "ccfd-bt" if client == "ccfd" else client
        print(f"{name:12s} {mbps:8.1f} {cpu:9.2f} {rss:13.1f}")
    others = {c: m for c, m in medians.items() if c != "ccfd"}
    if "ccfd" in medians and others:
        best = max(others, key=others.get)
        print(f"ccfd-bt / best other ({best}): {medians['ccfd'] / others[best]:.2f}x MB/s")


if __name__ == "__main__":
    main()
