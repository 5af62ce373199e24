#!/usr/bin/env bash
# The main job until the demo exists: seed the bundled sample from one local
# ccfd-bt peer and download it with another, then check the bytes.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
bin=target/release/ccfd-bt
out=$(mktemp -d)
"$bin" seed torrents/sample.torrent --data torrents/sample --bind 127.0.0.2 --port 6881 &
seed=$!
trap 'kill $seed 2>/dev/null; wait $seed 2>/dev/null; rm -rf "$out"' EXIT
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.2/6881) 2>/dev/null && break; sleep 0.1; done
"$bin" download torrents/sample.torrent -o "$out" --bind 127.0.0.3 --port 6881 --peer 127.0.0.2:6881
diff -r torrents/sample/ccfd-sample "$out/ccfd-sample" && echo "sample: downloaded and identical"
