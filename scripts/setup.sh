#!/usr/bin/env bash
# Installs the real programs the interop tests use. Idempotent: re-running is cheap.
set -euo pipefail
# mpv and tmux: the watch tests (a player on --serve, the dashboard in a terminal).
# nftables: the kernel-loss test of coded cooperation (a private network namespace).
# miniupnpd-nftables: the port-mapping tests (a UPnP IGD and NAT-PMP/PCP gateway in a namespace).
# iptables (its NFQUEUE target; this kernel's nftables has no queue statement), iperf3 and ping:
# the WAN emulator's tests and its validation (wanem/, scripts/wan.py).
pkgs=(opentracker aria2 transmission-cli transmission-daemon python3-libtorrent mktorrent nginx mpv tmux nftables miniupnpd-nftables iptables iperf3 iputils-ping)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# The Debian packages start services on install; the tests start their own.
for svc in transmission-daemon nginx; do
  if command -v systemctl >/dev/null 2>&1; then systemctl stop "$svc" >/dev/null 2>&1 || true; fi
done
echo "setup: ${pkgs[*]} present"
