#!/usr/bin/env bash
# Installs what building, testing, the demo and the benchmarks need on a fresh
# Debian machine, and nothing when it is already there. Go itself must exist.
set -euo pipefail
pkgs=(clang llvm libbpf-dev bpftool xdp-tools memcached netsniff-ng nftables tcpdump iproute2 python3-scapy prometheus systemd)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
	echo "deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian's memcached package starts a system instance on 127.0.0.1; the lab
# runs its own inside a namespace and leaves the host's alone.
command -v go >/dev/null || { echo "deps: Go is required (https://go.dev/dl), not found in PATH" >&2; exit 1; }
