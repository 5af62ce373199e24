#!/usr/bin/python3
"""A python3-libtorrent leecher of a bare info-hash through the DHT, for the
DHT benchmark.

usage: lt_magnet.py HASH SAVE_DIR IP PORT BOOTSTRAP_IP:PORT

Starts with an empty routing table and one bootstrap node, adds the
torrent by its 40-hex info-hash alone (a magnet with only xt=), and
prints, each once and as it happens: "peer" (first connected peer),
"metadata" (the info dictionary is in) and "done" (every piece verified,
then exits). Settings as scripts/lt_dht.py's nodes (../shared/REAL-PEERS.md).
"""
import sys
import time

import libtorrent as lt
from lt_dht import dht_session


def main():
    info_hash, save, ip, port, bootstrap = sys.argv[1:6]
    ses = dht_session(ip, listen_interfaces=f"{ip}:{port}", dht_bootstrap_nodes=bootstrap)
    host, bport = bootstrap.rsplit(":", 1)
    ses.add_dht_node((host, int(bport)))
    params = lt.add_torrent_params()
    params.info_hashes = lt.info_hash_t(lt.sha1_hash(bytes.fromhex(info_hash)))
    params.save_path = save
    handle = ses.add_torrent(params)
    said = set()

    def say(what):
        if what not in said:
            said.add(what)
            print(what, flush=True)

    while True:
        status = handle.status()
        if status.num_peers > 0:
            say("peer")
        if status.has_metadata:
            say("metadata")
        if status.is_seeding:
            say("done")
            return
        time.sleep(0.01)


if __name__ == "__main__":
    main()
