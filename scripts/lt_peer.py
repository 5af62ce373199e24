#!/usr/bin/python3
"""A python3-libtorrent peer for interop tests and benchmarks.

usage: lt_peer.py seed|download TORRENT SAVE_DIR IP PORT [PEER_IP:PORT ...]

Seeds until killed, or downloads and prints "done" once every piece is
verified (then exits). Everything that could reach beyond loopback or
slow a loopback test (DHT, LSD, UPnP, NAT-PMP, uTP) is off.
"""
import sys
import time

import libtorrent as lt
from lt_common import loopback_session


def main():
    mode, torrent, save, ip, port = sys.argv[1:6]
    peers = sys.argv[6:]
    session = loopback_session(ip, int(port))
    handle = session.add_torrent({"ti": lt.torrent_info(torrent), "save_path": save})
    for peer in peers:
        host, p = peer.rsplit(":", 1)
        handle.connect_peer((host, int(p)))
    last_dial = time.time()
    while True:
        status = handle.status()
        if mode == "download" and status.is_seeding:
            print("done", flush=True)
            return
        if peers and status.num_peers == 0 and time.time() - last_dial > 2:
            for peer in peers:
                host, p = peer.rsplit(":", 1)
                handle.connect_peer((host, int(p)))
            last_dial = time.time()
        time.sleep(0.05)


if __name__ == "__main__":
    main()
