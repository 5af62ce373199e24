#!/usr/bin/env python3
"""Seeds for the fuzz targets (issue 22), from real programs where we can:
.torrent files from `ccfd-bt create` and mktorrent, HTTP and UDP tracker
replies captured from opentracker and our built-in tracker, and messages
built from the specs (BEP 3/5/6/9/10/11/15/29, docs/ccfd-extension.md).

    python3 fuzz/make_seeds.py OUT_DIR [path/to/ccfd-bt]

writes OUT_DIR/<target>/<name>; scripts/fuzz.sh merges them into the
minimized corpus (fuzz/corpus/<target>/). Targets' conventions (the
scrape hash, the UDP transaction id, mode bytes) are in fuzz/src/lib.rs.
"""
import hashlib
import os
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

OUT = sys.argv[1]
BIN = sys.argv[2] if len(sys.argv) > 2 else "target/release/ccfd-bt"
SCRAPE_HASH = b"ccfd-bt fuzz scrape!"
UDP_TX = 0x0BADF00D


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def benc(v):
    if isinstance(v, int):
        return b"i%de" % v
    if isinstance(v, str):
        v = v.encode()
    if isinstance(v, bytes):
        return b"%d:%s" % (len(v), v)
    if isinstance(v, list):
        return b"l" + b"".join(benc(x) for x in v) + b"e"
    if isinstance(v, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, x) for k, x in v.items())
        return b"d" + b"".join(benc(k) + benc(x) for k, x in items) + b"e"
    raise TypeError(v)


def free_port(kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


tmp = tempfile.mkdtemp(prefix="ccfd-seeds-")

# --- .torrent files -----------------------------------------------------
single = os.path.join(tmp, "movie.mp4")
with open(single, "wb") as f:
    f.write(os.urandom(40000))
folder = os.path.join(tmp, "album")
os.makedirs(os.path.join(folder, "cd 1"))
for name, size in [("cd 1/01 intro.flac", 20000), ("cd 1/02.flac", 17), ("cover.jpg", 5000)]:
    with open(os.path.join(folder, name), "wb") as f:
        f.write(os.urandom(size))
torrents = {}
for src, name in [(single, "single"), (folder, "multi")]:
    out = os.path.join(tmp, name + ".ccfd.torrent")
    subprocess.run([BIN, "create", "--piece-length", "16384", "--tracker", "http://127.0.0.1:6969/announce",
                    "--tracker", "udp://127.0.0.1:6969/announce", "--web-seed", "http://127.0.0.1:8000/", "-o", out, src],
                   check=True, capture_output=True)
    torrents["ccfd-" + name] = open(out, "rb").read()
    out = os.path.join(tmp, name + ".mk.torrent")
    subprocess.run(["mktorrent", "-l", "15", "-a", "http://tracker.example/announce,http://backup.example/announce",
                    "-a", "udp://tracker.example:80", "-w", "http://mirror.example/files", "-p", "-o", out, src],
                   check=True, capture_output=True)
    torrents["mktorrent-" + name] = open(out, "rb").read()
for name, data in torrents.items():
    put("metainfo", name, data)
    put("bencode", name, data)
    # The bare info dictionary, as BEP 9 carries it.
    start = data.index(b"4:info") + 6
    put("metainfo", name + ".info", data[start:-1])
for f in ["torrents/sample.torrent"]:
    if os.path.exists(f):
        put("metainfo", "repo-sample", open(f, "rb").read())
info_single = torrents["ccfd-single"][torrents["ccfd-single"].index(b"4:info") + 6:-1]
info_hash = hashlib.sha1(info_single).digest()

# --- magnet links -------------------------------------------------------
hexhash = info_hash.hex()
for i, m in enumerate([
    f"magnet:?xt=urn:btih:{hexhash}",
    f"magnet:?xt=urn:btih:{hexhash}&dn=movie.mp4&tr=http%3A%2F%2F127.0.0.1%3A6969%2Fannounce&tr=udp%3A%2F%2Ftracker.example%3A80",
    "magnet:?xt=urn:btih:CIJIYHOOZH6GX6OQYIAMDE4DXN66ZPXL&dn=base32&x.pe=10.0.0.1:6881&x.pe=[2001:db8::1]:51413",
    f"magnet:?xt=urn:btmh:1220{'ab' * 32}&xt=urn:btih:{hexhash}&so=0,2,4-6&dn=Big%20Buck%20Bunny",
    hexhash,
    "CIJIYHOOZH6GX6OQYIAMDE4DXN66ZPXL",
]):
    put("magnet", f"m{i}", m)

# --- tracker replies: opentracker and the built-in tracker ---------------
def announce_query(ih, peer_id, port, extra=""):
    q = "info_hash=" + urllib.parse.quote_from_bytes(ih) + "&peer_id=" + urllib.parse.quote_from_bytes(peer_id)
    return q + f"&port={port}&uploaded=0&downloaded=0&left=1000{extra}"


def udp_transact(port, req):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    s.sendto(req, ("127.0.0.1", port))
    data = s.recv(65536)
    s.close()
    return data


def udp_session(name, port):
    # Connect, announce twice (two peers), scrape; each reply with our tx.
    connect = struct.pack(">QII", 0x41727101980, 0, UDP_TX)
    reply = udp_transact(port, connect)
    put("tracker_udp", f"{name}-connect", reply)
    conn = reply[8:16]
    for i, (ih, left, event) in enumerate([(SCRAPE_HASH, 0, 2), (SCRAPE_HASH, 1000, 2), (info_hash, 5, 1)]):
        req = conn + struct.pack(">II", 1, UDP_TX) + ih + bytes([0x30 + i]) * 20 + struct.pack(
            ">QQQIIIiH", 0, left, 0, event, 0, 7, 50, 6881 + i)
        put("tracker_udp", f"{name}-announce{i}", udp_transact(port, req))
        put("tracker_server", f"udp-announce{i}", b"\x03" + req)
    req = conn + struct.pack(">II", 2, UDP_TX) + SCRAPE_HASH + info_hash
    put("tracker_udp", f"{name}-scrape", udp_transact(port, req))
    put("tracker_server", "udp-scrape", b"\x03" + req)
    put("tracker_server", "udp-connect", b"\x01" + connect)
    bad = conn + struct.pack(">II", 1, UDP_TX) + b"short"
    try:
        put("tracker_udp", f"{name}-error", udp_transact(port, bad))
    except socket.timeout:
        pass  # opentracker drops it silently


def fetch(url):
    try:
        return urllib.request.urlopen(url, timeout=3).read()
    except urllib.error.HTTPError as e:
        return e.read()


def http_session(name, base):
    for i, (extra, left) in enumerate([("&compact=1&event=started", 0), ("&compact=1", 5), ("&compact=0&numwant=5", 5)]):
        q = announce_query(SCRAPE_HASH, bytes([0x41 + i]) * 20, 6881 + i, extra)
        body = fetch(f"{base}/announce?{q}")
        put("tracker_http", f"{name}-announce{i}", body)
        put("bencode", f"{name}-announce{i}", body)
        head = f"GET /announce?{q} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: ccfd-bt\r\n\r\n"
        put("tracker_server", f"http-announce{i}", b"\x00" + head.encode())
    q = "info_hash=" + urllib.parse.quote_from_bytes(SCRAPE_HASH) + "&info_hash=" + urllib.parse.quote_from_bytes(info_hash)
    put("tracker_http", f"{name}-scrape", fetch(f"{base}/scrape?{q}"))
    put("tracker_server", "http-scrape", b"\x00" + f"GET /scrape?{q} HTTP/1.1\r\n\r\n".encode())
    put("tracker_http", f"{name}-failure", fetch(f"{base}/announce?info_hash=short"))


procs = []
try:
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="ot-")
    # Debian's opentracker serves only whitelisted torrents, and reads the
    # list as user nobody (mkdtemp's folder is private).
    os.chmod(workdir, 0o755)
    with open(os.path.join(workdir, "whitelist"), "w") as f:
        f.write(SCRAPE_HASH.hex() + "\n" + info_hash.hex() + "\n")
    procs.append(subprocess.Popen(["opentracker", "-i", "127.0.0.1", "-p", str(port), "-P", str(port), "-d", workdir,
                                   "-w", "whitelist"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(2)  # it loads the whitelist in the background
    http_session("opentracker", f"http://127.0.0.1:{port}")
    udp_session("opentracker", port)
except Exception as e:
    print("opentracker capture skipped:", e, file=sys.stderr)
try:
    hport, uport = free_port(), free_port(socket.SOCK_DGRAM)
    procs.append(subprocess.Popen([BIN, "tracker", "--http", f"127.0.0.1:{hport}", "--udp", f"127.0.0.1:{uport}"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(0.5)
    http_session("builtin", f"http://127.0.0.1:{hport}")
    udp_session("builtin", uport)
finally:
    for p in procs:
        p.terminate()
        p.wait()

# --- peer wire (BEP 3, 6, 10) ---------------------------------------------
def frame(mid, payload=b""):
    return struct.pack(">IB", 1 + len(payload), mid) + payload


handshake = b"\x13BitTorrent protocol" + bytes([0, 0, 0, 0, 0, 0x10, 0, 0x05]) + info_hash + b"-CB0100-abcdefghijkl"
ext_hs = benc({"m": {"ut_metadata": 2, "ut_pex": 1, "ccfd": 3}, "v": "ccfd-bt 0.1", "reqq": 250, "p": 6881,
               "metadata_size": len(info_single),
               "ccfd": {"v": 1, "port": 6881, "token": b"\x80\x01\x02\x03\x04\x05\x06\x07", "s": 1024, "k": 16}})
messages = [
    frame(0), frame(1), frame(2), frame(3), frame(4, struct.pack(">I", 7)), frame(5, b"\xff\xfe"),
    frame(6, struct.pack(">III", 1, 0, 16384)), frame(7, struct.pack(">II", 1, 0) + b"x" * 64),
    frame(8, struct.pack(">III", 1, 0, 16384)), frame(9, struct.pack(">H", 6881)), frame(0x0D, struct.pack(">I", 3)),
    frame(0x0E), frame(0x0F), frame(0x10, struct.pack(">III", 2, 16384, 16384)), frame(0x11, struct.pack(">I", 4)),
    frame(20, b"\x00" + ext_hs), struct.pack(">I", 0),
]
put("wire", "session", handshake + b"".join(messages))
for i, m in enumerate(messages):
    put("wire", f"msg{i}", handshake + m)
put("wire", "too-large", handshake + struct.pack(">I", 1 << 30))

# --- extended payloads ------------------------------------------------------
put("extended", "handshake", ext_hs)
put("extended", "handshake-libtorrent", benc({"m": {"lt_donthave": 7, "share_mode": 8, "upload_only": 3, "ut_holepunch": 4,
                                                    "ut_metadata": 2, "ut_pex": 1}, "metadata_size": 31235, "reqq": 500,
                                              "v": "libtorrent/2.0.10", "yourip": b"\x7f\x00\x00\x01", "complete_ago": -1}))
put("extended", "ut_metadata-request", benc({"msg_type": 0, "piece": 0}))
put("extended", "ut_metadata-data", benc({"msg_type": 1, "piece": 0, "total_size": len(info_single)}) + info_single)
put("extended", "ut_metadata-reject", benc({"msg_type": 2, "piece": 1}))
ip4 = bytes([10, 0, 0, 2]) + struct.pack(">H", 6881)
ip6 = socket.inet_pton(socket.AF_INET6, "2001:db8::5") + struct.pack(">H", 51413)
put("extended", "ut_pex", benc({"added": ip4 * 3, "added.f": b"\x12\x01\x00", "added6": ip6, "added6.f": b"\x04",
                                "dropped": ip4, "dropped6": ip6}))
put("extended", "ccfd-want", struct.pack(">BIIIHHB", 1, 3, 16384, 16384, 8, 2, 1))
put("extended", "ccfd-rank", struct.pack(">BIIH", 2, 3, 16384, 16))
put("extended", "ccfd-feedback", struct.pack(">BIII", 3, 100, 120, 2500))
put("extended", "ccfd-cancel", struct.pack(">BII", 4, 3, 0))

# --- coded datagrams and packets (docs/ccfd-extension.md, codec/src/packet.rs) --
token = b"\x80\x01\x02\x03\x04\x05\x06\x07"
def short(kind, piece, gen, coeff, payload):
    return bytes([kind]) + struct.pack(">IH", piece, gen) + coeff + payload
# The target's geometry: K = (gen & 0xff) + 1, S = (piece & 0x7ff) + 1.
piece, gen = 15, 3           # K = 4, S = 16
hdr = token + struct.pack(">II", 9, 123456)
put("coded", "probe", hdr)
put("coded", "systematic", hdr + short(0, piece, gen, struct.pack(">H", 2), b"s" * 16))
put("coded", "seeded", hdr + short(1, piece, gen, struct.pack(">Q", 0xDEADBEEF), b"r" * 16))
put("coded", "explicit", hdr + short(2, piece, gen, bytes([1, 2, 3, 4]), b"e" * 16))
put("coded", "full-seeded", struct.pack(">BBIHHHI", 1, 1, 7, 0, 16, 64, 1000) + struct.pack(">Q", 42) + b"p" * 64)
put("coded", "full-explicit", struct.pack(">BBIHHHI", 1, 2, 7, 1, 4, 8, 30) + bytes([9, 8, 7, 6]) + b"q" * 8)

# --- HTTP/1.1 request heads (what players and curl send) ---------------------
for i, h in enumerate([
    "GET /movie.mp4 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUser-Agent: mpv 0.37\r\nRange: bytes=0-\r\n\r\n",
    "GET /files/a%20b.mkv?x=1 HTTP/1.1\r\nHost: h\r\nRange: bytes=1000-1999\r\nConnection: close\r\n\r\n",
    "HEAD /movie.mp4 HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
    "GET / HTTP/1.1\r\nHost: h\r\n\r\nGET /sub.vtt HTTP/1.1\r\nRange: bytes=5-\r\n\r\n",
    "GET /movie.mp4 HTTP/1.1\r\nRange: bytes=-500\r\n\r\n",
]):
    put("http1", f"h{i}", h)

# --- KRPC (BEP 5, 32, 42) ------------------------------------------------------
nid = b"abcdefghij0123456789"
node4 = b"mnopqrstuvwxyz123456" + bytes([10, 0, 0, 9]) + struct.pack(">H", 6881)
node6 = b"MNOPQRSTUVWXYZ123456" + socket.inet_pton(socket.AF_INET6, "2001:db8::9") + struct.pack(">H", 6881)
for name, msg in [
    ("ping", {"t": "aa", "y": "q", "q": "ping", "a": {"id": nid}}),
    ("ping-r", {"t": "aa", "y": "r", "r": {"id": b"mnopqrstuvwxyz123456"}, "ip": bytes([10, 0, 0, 1]) + b"\x1a\xe1"}),
    ("find_node", {"t": "aa", "y": "q", "q": "find_node", "a": {"id": nid, "target": b"mnopqrstuvwxyz123456", "want": ["n4", "n6"]}}),
    ("find_node-r", {"t": "aa", "y": "r", "r": {"id": nid, "nodes": node4 * 2, "nodes6": node6}}),
    ("get_peers", {"t": "aa", "y": "q", "q": "get_peers", "a": {"id": nid, "info_hash": info_hash}, "v": "LT\x01\x02"}),
    ("get_peers-r", {"t": "aa", "y": "r", "r": {"id": nid, "token": "aoeusnth", "values": [b"axje.u", b"idhtnm"]}}),
    ("get_peers-r-nodes", {"t": "aa", "y": "r", "r": {"id": nid, "token": "aoeusnth", "nodes": node4}}),
    ("announce_peer", {"t": "aa", "y": "q", "q": "announce_peer",
                       "a": {"id": nid, "implied_port": 1, "info_hash": info_hash, "port": 6881, "token": "aoeusnth"}}),
    ("error", {"t": "aa", "y": "e", "e": [201, "A Generic Error Ocurred"]}),
    ("unknown", {"t": "aa", "y": "q", "q": "sample_infohashes", "a": {"id": nid, "target": nid}, "ro": 1}),
]:
    put("krpc", name, benc(msg))
    put("bencode", "krpc-" + name, benc(msg))

# --- uTP (BEP 29) ------------------------------------------------------------------
def utp(kind, ext=b"", ext_first=0, payload=b"", conn=0x1234, seq=100, ack=42):
    return bytes([kind << 4 | 1, ext_first]) + struct.pack(">HIIIHH", conn, 1000, 50, 1 << 20, seq, ack) + ext + payload
put("utp", "syn", utp(4, seq=1, ack=0))
put("utp", "state", utp(2))
put("utp", "data", utp(0, payload=b"\x13BitTorrent protocol"))
put("utp", "fin", utp(1))
put("utp", "reset", utp(3))
put("utp", "state-sack", utp(2, ext=b"\x00\x04\x05\x00\x00\x00", ext_first=1))
put("utp", "state-sack-2ext", utp(2, ext=b"\x02\x04\x05\x00\x00\x00\x00\x02ab", ext_first=1))

# --- fast-resume records (mode byte, see fuzz/src/lib.rs) -----------------------------
def stamp(size, secs, nanos):
    return b"\x01" + struct.pack(">QqI", size, secs, nanos)
body = struct.pack(">II", 3, 2) + stamp(20000, 1700000000, 5) + b"\x00" + bytes([0b10100000])
put("resume", "mode2-record", b"\x02" + body)
put("resume", "mode2-empty", b"\x02" + struct.pack(">II", 3, 2) + b"\x00\x00" + b"\x00")
put("resume", "mode1-wrong-torrent", b"\x01CCFDRSM1" + b"\x00" * 20 + body)
put("resume", "mode0-raw", b"\x00CCFDRSM1" + body)
print("seeds in", OUT)
