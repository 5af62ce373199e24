#!/usr/bin/python3
"""A swarm of python3-libtorrent peers, for the distribution benchmark.

usage: lt_swarm.py TORRENT CONTENT_DIR WORK_DIR N RATE SUBNET [super]

One seed (serving CONTENT_DIR) and N leechers, every upload capped at RATE
bytes per second, peer i on 127.62.SUBNET.(i+1). Everyone starts together and
every leecher dials every other peer. `super` turns on super-seeding.
Prints one JSON line: seconds until every leecher finished, and the seed's
uploaded payload bytes.
"""
import json
import sys
import time

import libtorrent as lt
from lt_common import loopback_session


def session(ip, rate):
    s = loopback_session(ip, upload_rate_limit=rate)
    # Loopback peers are "local" and exempt from rate limits unless every
    # address is put in the global peer class.
    f = lt.ip_filter()
    f.add_rule("0.0.0.0", "255.255.255.255", 1 << lt.session.global_peer_class_id)
    s.set_peer_class_filter(f)
    return s


def main():
    torrent, content, work, n, rate, subnet = sys.argv[1:7]
    super_seed = "super" in sys.argv[7:]
    n, rate = int(n), int(rate)
    info = lt.torrent_info(torrent)
    ips = [f"127.62.{subnet}.{i + 1}" for i in range(n + 1)]
    sessions = [session(ip, rate) for ip in ips]
    handles = []
    for i, s in enumerate(sessions):
        params = lt.add_torrent_params()
        params.ti = info
        params.save_path = content if i == 0 else f"{work}/lt-{i}"
        if i == 0 and super_seed:
            params.flags |= lt.torrent_flags.super_seeding
        handles.append(s.add_torrent(params))
    # The seed checks its data first; start the clock when it is seeding.
    while not handles[0].status().is_seeding:
        time.sleep(0.01)
    start = time.time()
    for i, h in enumerate(handles):
        for j, ip in enumerate(ips):
            if i != j:
                h.connect_peer((ip, 6881))
    done = [False] * len(handles)
    done[0] = True
    while not all(done):
        for i, h in enumerate(handles):
            if not done[i] and h.status().is_seeding:
                done[i] = True
        time.sleep(0.02)
    seconds = time.time() - start
    uploaded = handles[0].status().total_payload_upload
    print(json.dumps({"seconds": seconds, "seed_uploaded": uploaded}), flush=True)


if __name__ == "__main__":
    main()
