#!/usr/bin/env bash
# The xdpguard lab (attacker, router, reflector with memcached, victim; see
# internal/lab): up, down and status are idempotent. The topology lives in
# Go, in one place; this only runs it.
#   sudo scripts/lab.sh up|down|status [--prefix NAME]   (default prefix: xgl)
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
up | down | status) ;;
*)
	echo "usage: sudo $0 up|down|status [--prefix NAME]" >&2
	exit 2
	;;
esac
[[ $EUID -eq 0 ]] || { echo "lab: needs root (network namespaces); run with sudo" >&2; exit 1; }
exec go run ./internal/lab/cmd/xglab "$@"
