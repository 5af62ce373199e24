#!/usr/bin/python3
"""A DHT of python3-libtorrent nodes on loopback, for the DHT tests and bench.

usage: lt_dht.py NET NODES [--seed TORRENT SAVE] [--leech HASH SAVE]
                 [--pex-seed TORRENT SAVE] [--peer IP:PORT ...]

Starts NODES DHT-only sessions at NET.10, NET.11, ... port 7000, each
told of the others (libtorrent nodes listed only as bootstrap nodes do not
join each other's tables, so add_dht_node is repeated until they do).
--seed adds a seeding session at NET.9:7000 that announces TORRENT in the
DHT; --leech adds a session at NET.8:7000 that downloads the torrent named
by its 40-hex info-hash alone (a magnet with only xt=), finding peers in
the DHT, and prints "done" when it has every piece. Prints "ready" once
every node knows at least two others (and the seed has announced).
Settings follow ../shared/REAL-PEERS.md: on loopback, libtorrent must not
restrict routing or search to one node per /24, and its per-IP rate limit
must not ban the test's own traffic.
"""
import sys
import time

import libtorrent as lt

PORT = 7000


def dht_session(ip, **extra):
    settings = {
        "listen_interfaces": f"{ip}:{PORT}",
        "outgoing_interfaces": ip,
        "enable_dht": True,
        "dht_bootstrap_nodes": "",
        "dht_restrict_routing_ips": False,
        "dht_restrict_search_ips": False,
        "dht_enforce_node_id": False,
        "dht_ignore_dark_internet": False,
        "dht_prefer_verified_node_ids": False,
        "dht_block_ratelimit": 1000,
        "dht_upload_rate_limit": 1000000,
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_outgoing_utp": False,
        "enable_incoming_utp": False,
        "allow_multiple_connections_per_ip": True,
        "alert_mask": lt.alert.category_t.stats_notification | lt.alert.category_t.status_notification,
    }
    settings.update(extra)
    return lt.session(settings)


def dht_nodes(ses):
    """The session's routing-table size, from a fresh stats alert."""
    ses.post_session_stats()
    deadline = time.time() + 1
    while time.time() < deadline:
        ses.wait_for_alert(100)
        for a in ses.pop_alerts():
            if isinstance(a, lt.session_stats_alert):
                return a.values.get("dht.dht_nodes", 0)
    return 0


def main():
    net, count = sys.argv[1], int(sys.argv[2])
    args = sys.argv[3:]
    nodes = [dht_session(f"{net}.{10 + i}") for i in range(count)]
    addrs = [(f"{net}.{10 + i}", PORT) for i in range(count)]
    seed = leech = seed_handle = leech_handle = None
    extra_peers = []
    i = 0
    while i < len(args):
        if args[i] == "--seed":
            seed = dht_session(f"{net}.9")
            seed_handle = seed.add_torrent({"ti": lt.torrent_info(args[i + 1]), "save_path": args[i + 2]})
            i += 3
        elif args[i] == "--leech":
            leech = dht_session(f"{net}.8")
            params = lt.add_torrent_params()
            params.info_hashes = lt.info_hash_t(lt.sha1_hash(bytes.fromhex(args[i + 1])))
            params.save_path = args[i + 2]
            leech_handle = leech.add_torrent(params)
            i += 3
        elif args[i] == "--peer":
            extra_peers.append(args[i + 1])
            i += 2
        else:
            sys.exit(f"unknown argument {args[i]}")
    everyone = nodes + [s for s in (seed, leech) if s is not None]
    ready = False
    last_join = 0.0
    while True:
        now = time.time()
        if now - last_join > 1:
            last_join = now
            for s in everyone:
                for a in addrs:
                    s.add_dht_node(a)
            # libtorrent looks a torrent up in the DHT only every 15 minutes;
            # a test cannot wait that long for a peer that announced late.
            for h in (seed_handle, leech_handle):
                if h is not None:
                    h.force_dht_announce()
        if not ready:
            counts = [dht_nodes(s) for s in nodes]
            if all(c >= min(2, count - 1) for c in counts):
                ready = True
                print("ready", counts, flush=True)
        if leech_handle is not None:
            status = leech_handle.status()
            if status.is_seeding:
                print("done", flush=True)
                return
            for p in extra_peers:
                host, port = p.rsplit(":", 1)
                leech_handle.connect_peer((host, int(port)))
            extra_peers = []
        time.sleep(0.2)


if __name__ == "__main__":
    main()
