#!/usr/bin/python3
"""python3-libtorrent streaming a movie in a VoD world, for the VoD benchmark.

usage: lt_vod.py TORRENT SAVE_DIR IP RATE DELAY PREFETCH webseed|fallback

Every piece gets a deadline at start (set_piece_deadline), from
t_b = D - P + b/R for its last byte b. Two modes:
  webseed   libtorrent's own behaviour with the VoD server as a BEP 19 web seed;
  fallback  no web seed; at each piece's deadline a piece libtorrent has not
            completed is fetched whole from the VoD server (the torrent's
            url-list) and handed over with add_piece (the workshop's rule).
Prints one JSON line when every piece is present: seconds, and the pieces
and bytes taken whole from the server in fallback mode.
"""
import json
import sys
import time
import urllib.request

import libtorrent as lt
from lt_common import loopback_session


def main():
    torrent, save, ip, rate, delay, prefetch, mode = sys.argv[1:8]
    rate, delay, prefetch = float(rate), float(delay), float(prefetch)
    info = lt.torrent_info(torrent)
    url = info.web_seeds()[0]["url"] if info.web_seeds() else None
    session = loopback_session(ip)
    if mode == "fallback":
        info.set_web_seeds([])
    params = lt.add_torrent_params()
    params.ti = info
    params.save_path = save
    handle = session.add_torrent(params)
    start = time.time()
    n, plen, total = info.num_pieces(), info.piece_length(), info.total_size()
    deadlines = [delay - prefetch + (min((i + 1) * plen, total) - 1) / rate for i in range(n)]
    for i, d in enumerate(deadlines):
        handle.set_piece_deadline(i, max(0, int(d * 1000)))
    fetched = 0
    server_bytes = 0
    while True:
        status = handle.status()
        if status.is_seeding or all(handle.have_piece(i) for i in range(n)):
            break
        now = time.time() - start
        if mode == "fallback" and url:
            for i in range(n):
                if deadlines[i] <= now and not handle.have_piece(i):
                    lo, hi = i * plen, min((i + 1) * plen, total) - 1
                    req = urllib.request.Request(url, headers={"Range": f"bytes={lo}-{hi}"})
                    data = urllib.request.urlopen(req, timeout=30).read()
                    handle.add_piece(i, data, lt.add_piece_flags_t.overwrite_existing)
                    fetched += 1
                    server_bytes += len(data)
                    while not handle.have_piece(i) and time.time() - start < now + 5:
                        time.sleep(0.005)
        time.sleep(0.02)
    print(json.dumps({"seconds": time.time() - start, "pieces_from_server": fetched, "server_bytes": server_bytes}), flush=True)


if __name__ == "__main__":
    main()
