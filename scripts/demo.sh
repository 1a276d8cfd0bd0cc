#!/usr/bin/env bash
# xdpguard demo (`sudo make demo`, after `make deps build`): a real memcached
# in a lab of network namespaces is used to flood a victim with spoofed UDP
# requests, first unprotected, then with xdpguard on the reflector, then with
# xdpguard on the victim. Exits non-zero if xdpguard fails to stop the
# attack. Leaves the host as it found it, also on failure or Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

PREFIX=xgl
PIN=/sys/fs/bpf/xdpguard-lab-$PREFIX     # the reflector's xdpguard state
VPIN=/sys/fs/bpf/xdpguard-lab-$PREFIX-victim
XDPGUARD=$PWD/bin/xdpguard
COUNT=10
BIG=500000

[[ $EUID -eq 0 ]] || { echo "demo: needs root; run: sudo make demo" >&2; exit 1; }
[[ -x $XDPGUARD ]] || { echo "demo: $XDPGUARD missing; run: make build" >&2; exit 1; }

start=$SECONDS
tmp=$(mktemp -d)
cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	for ns_pin in "reflector $PIN" "victim $VPIN"; do
		set -- $ns_pin
		if [[ -e /run/netns/$PREFIX-$1 && -d $2 ]]; then
			nsenter --net=/run/netns/$PREFIX-$1 "$XDPGUARD" --pin-path "$2" detach --all >/dev/null 2>&1 || true
		fi
		rm -rf "$2"
	done
	[[ -x $tmp/xglab ]] && "$tmp/xglab" --prefix "$PREFIX" down >/dev/null 2>&1 || true
	rm -rf "$tmp"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Headings in bold on a terminal only: logs (CI) get plain text.
bold="" norm=""
if [[ -t 1 ]]; then bold=$(tput bold 2>/dev/null || true) norm=$(tput sgr0 2>/dev/null || true); fi
heading() { printf '\n%s== %s ==%s\n' "$bold" "$*" "$norm"; }
in_ns() { local ns=$1; shift; nsenter --net="/run/netns/$PREFIX-$ns" "$@"; }
lab() { "$tmp/xglab" --prefix "$PREFIX" "$@"; }

heading "Setting up the lab"
go build -o "$tmp/xglab" ./internal/lab/cmd/xglab
lab down >/dev/null
rm -rf "$PIN" "$VPIN"
lab up
lab set big $BIG
echo "The attacker sends memcached UDP requests with the victim's address as source;"
echo "memcached answers the victim. 'AT VICTIM B' is what arrived on the victim's link,"
echo "'VICTIM IP' the reflected packets and fragments its IP layer took in."

heading "1. No protection: memcached amplifies the attack"
lab table-header
for fam in 4 6; do
	lab attack --family $fam --cmd stats --count $COUNT --expect open --label "IPv$fam stats"
	lab attack --family $fam --cmd get:big --count $COUNT --expect open --label "IPv$fam get (${BIG} B value)"
done

heading "2. xdpguard on the reflector: xdpguard attach refl0 --egress"
in_ns reflector "$XDPGUARD" --pin-path "$PIN" attach refl0 --egress
in_ns reflector "$XDPGUARD" --pin-path "$PIN" status
echo
lab table-header
guard=(--xdpguard "$XDPGUARD" --pin-path "$PIN")
for fam in 4 6; do
	lab attack --family $fam --cmd stats --count $COUNT --expect blocked "${guard[@]}" --label "IPv$fam stats"
	lab attack --family $fam --cmd get:big --count $COUNT --expect blocked "${guard[@]}" --label "IPv$fam get"
done
echo "Requests arriving on refl1 (no XDP there) are answered out of refl0, where"
echo "the TC egress program stops the answers:"
lab attack --family 4 --via refl1 --cmd get:big --count $COUNT --expect blocked "${guard[@]}" --label "IPv4 get via refl1 (egress)"
lab attack --family 6 --via refl1 --cmd get:big --count $COUNT --expect blocked "${guard[@]}" --label "IPv6 get via refl1 (egress)"
echo
in_ns reflector "$XDPGUARD" --pin-path "$PIN" stats
in_ns reflector "$XDPGUARD" --pin-path "$PIN" detach --all >/dev/null
rm -rf "$PIN"

heading "3. xdpguard on the victim: xdpguard attach vic0"
echo "The reflector is unprotected again; the victim drops the reflected flood,"
echo "fragments included, at its driver, before its IP layer sees any of it."
in_ns victim "$XDPGUARD" --pin-path "$VPIN" attach vic0
lab table-header
for fam in 4 6; do
	lab attack --family $fam --cmd get:big --count $COUNT --expect clean --label "IPv$fam get"
done
echo
in_ns victim "$XDPGUARD" --pin-path "$VPIN" stats
in_ns victim "$XDPGUARD" --pin-path "$VPIN" detach --all >/dev/null

heading "Done in $((SECONDS - start))s: xdpguard stopped every attack"
