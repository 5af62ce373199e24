#!/usr/bin/python3
"""A python3-libtorrent peer for interop tests and benchmarks.

usage: lt_peer.py seed|download TORRENT SAVE_DIR IP PORT [PEER_IP:PORT ...]
                  [--utp-only | --utp] [--encrypted] [--stay] [--report-peers] [--choke-all]
                  [--upload-kbps N] [--download-kbps N]

Seeds until killed, or downloads and prints "done" once every piece is
verified (then exits, or with --stay seeds on until killed).
--upload-kbps N and --download-kbps N cap its rates at N kB/s;
--report-peers prints "peers N" whenever its count of connected peers changes;
--choke-all unchokes nobody (a choked peer gets only its allowed-fast pieces, BEP 6). Everything that could reach beyond loopback or
slow a loopback test (DHT, LSD, UPnP, NAT-PMP, uTP) is off, unless:
--utp-only turns TCP off both ways and uTP on (a TCP connect is accepted
and reset); --utp turns uTP on beside TCP; --encrypted forces protocol encryption (RC4) in and out.
IP may be an IPv6 address (::1).
"""
import sys
import time

import libtorrent as lt
from lt_common import loopback_session


def main():
    argv = sys.argv[1:]
    caps = {}
    for flag, setting in (("--upload-kbps", "upload_rate_limit"), ("--download-kbps", "download_rate_limit")):
        if flag in argv:
            i = argv.index(flag)
            caps[setting] = int(argv[i + 1]) * 1000
            del argv[i:i + 2]
    flags = {a for a in argv if a.startswith("--")}
    args = [a for a in argv if not a.startswith("--")]
    mode, torrent, save, ip, port = args[:5]
    peers = args[5:]
    extra = {}
    if "--utp-only" in flags:
        extra.update({
            "enable_outgoing_utp": True,
            "enable_incoming_utp": True,
            "enable_outgoing_tcp": False,
            "enable_incoming_tcp": False,
        })
    if "--utp" in flags:
        extra.update({"enable_outgoing_utp": True, "enable_incoming_utp": True})
    if "--choke-all" in flags:
        extra["unchoke_slots_limit"] = 0
    if "--encrypted" in flags:
        extra.update({
            "out_enc_policy": int(lt.enc_policy.forced),
            "in_enc_policy": int(lt.enc_policy.forced),
            "allowed_enc_level": int(lt.enc_level.rc4),
        })
    extra.update(caps)
    session = loopback_session(ip, int(port), **extra)
    if caps or "--choke-all" in flags:
        # Loopback peers are "local", exempt from rate limits and unchoke
        # slots, unless every address is put in the global peer class.
        f = lt.ip_filter()
        f.add_rule("0.0.0.0", "255.255.255.255", 1 << lt.session.global_peer_class_id)
        session.set_peer_class_filter(f)
    handle = session.add_torrent({"ti": lt.torrent_info(torrent), "save_path": save})

    def dial():
        for peer in peers:
            host, p = peer.rsplit(":", 1)
            handle.connect_peer((host.strip("[]"), int(p)))

    dial()
    last_dial = time.time()
    said_done = False
    reported_peers = 0
    while True:
        status = handle.status()
        if "--report-peers" in flags and status.num_peers != reported_peers:
            reported_peers = status.num_peers
            print(f"peers {reported_peers}", flush=True)
        if mode == "download" and status.is_seeding and not said_done:
            print("done", flush=True)
            said_done = True
            if "--stay" not in flags:
                return
        if peers and status.num_peers == 0 and time.time() - last_dial > 2:
            dial()
            last_dial = time.time()
        time.sleep(0.05)


if __name__ == "__main__":
    main()
