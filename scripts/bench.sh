#!/usr/bin/env bash
# `sudo make bench`: xdpguard's cost side by side with xdp-filter, nftables
# and the XDP_DROP floor, measured in one run on this machine; writes
# docs/benchmarks.md and docs/benchmarks.svg. Extra arguments go to the
# driver (go run ./internal/bench/cmd/xgbench --help).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) != 0 ]]; then
	echo "bench: needs root (BPF programs, network namespaces, trafgen): run sudo make bench" >&2
	exit 1
fi
go build -o bin/xgbench ./internal/bench/cmd/xgbench
exec bin/xgbench --xdpguard bin/xdpguard "$@"
