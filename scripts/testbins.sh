#!/usr/bin/env bash
# Fetches the servers the end-to-end tests run but the host must not: chrony's
# chronyd (NTP) and dnsmasq (DNS). Installing Debian's packages would change
# the operator's services: chrony removes systemd-timesyncd and starts
# chronyd on the host's clock, dnsmasq-base adds a system user and /run/dnsmasq
# (and unbound would start a resolver on 127.0.0.1:53). So their package files
# are downloaded (apt-get download) and unpacked (dpkg-deb -R) into a cache,
# one directory per version, never installed: no maintainer script runs, and
# no service, user or config appears. Only the shared libraries they depend on
# are installed when missing: libraries run nothing.
#
#   $XDPGUARD_TESTBINS (default /var/cache/xdpguard-testbins)/
#     chrony_4.3-2+deb12u3_amd64/usr/sbin/chronyd   an unpacked package
#     chrony -> chrony_4.3-2+deb12u3_amd64           the version the tests use
#
# internal/e2e finds the binaries there by the same variable and default. Run
# again, it does nothing unless apt's candidate version changed (the older
# version's directory is then removed).
#
# Usage: testbins.sh PACKAGE:PATH_OF_ITS_BINARY...
set -euo pipefail
cache=${XDPGUARD_TESTBINS:-/var/cache/xdpguard-testbins}
arch=$(dpkg --print-architecture)
updated=
tmp= # a download under way, removed however the script ends
trap 'if [[ -n $tmp ]]; then rm -rf "$tmp"; fi' EXIT

candidate() { apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}'; }

# libdeps prints the lib* packages in an unpacked package's Depends (first
# of each alternative, without versions).
libdeps() {
	sed -n 's/^Depends: //p' "$1/DEBIAN/control" | tr ',' '\n' |
		sed -E 's/\|.*//; s/\(.*\)//; s/:any//; s/[[:space:]]//g' | grep '^lib' || true
}

fetch() {
	local pkg=$1 bin=$2 ver dir libs installed missing=() p
	ver=$(candidate "$pkg")
	if [[ -z $ver || $ver == "(none)" ]] && [[ -z $updated ]]; then
		apt-get update -qq
		updated=1
		ver=$(candidate "$pkg")
	fi
	if [[ -z $ver || $ver == "(none)" ]]; then
		echo "testbins: no version of Debian package $pkg is available from apt's sources (apt-cache policy $pkg)" >&2
		exit 1
	fi
	dir=${pkg}_${ver//:/%3a}_$arch
	if [[ ! -x $cache/$dir/$bin ]]; then
		echo "testbins: fetching $pkg $ver into $cache/$dir (unpacked, not installed)"
		mkdir -p "$cache"
		tmp=$(mktemp -d "$cache/.fetch.XXXXXX")
		# apt fetches as its sandbox user _apt when that user may write here.
		chmod 0755 "$tmp"
		if id _apt >/dev/null 2>&1; then chown _apt "$tmp"; fi
		(cd "$tmp" && apt-get download -qq "$pkg=$ver")
		dpkg-deb -R "$tmp"/*.deb "$tmp/root"
		rm -rf "${cache:?}/$dir"
		mv "$tmp/root" "$cache/$dir"
		rm -rf "$tmp"
		tmp=
	fi
	mapfile -t libs < <(libdeps "$cache/$dir")
	installed=$(dpkg-query -W -f='${Package} ${Status}\n' "${libs[@]}" 2>/dev/null | awk '/install ok installed/ {print $1}' || true)
	for p in "${libs[@]}"; do
		grep -qx "$p" <<<"$installed" || missing+=("$p")
	done
	if ((${#missing[@]})); then
		echo "testbins: installing the libraries $pkg links against: ${missing[*]}"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	fi
	if ldd "$cache/$dir/$bin" | grep 'not found'; then
		echo "testbins: $cache/$dir/$bin lacks the libraries above" >&2
		exit 1
	fi
	# Switch the link in one rename, then drop other versions.
	ln -sfn "$dir" "$cache/.$pkg.new"
	mv -T "$cache/.$pkg.new" "$cache/$pkg"
	for p in "$cache/${pkg}"_*; do
		[[ $p == "$cache/$dir" || ! -d $p ]] || rm -rf "$p"
	done
}

for spec in "$@"; do
	fetch "${spec%%:*}" "${spec#*:}"
done
