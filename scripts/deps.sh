#!/usr/bin/env bash
# Installs what building, testing, the demo and the benchmarks need on a fresh
# Debian machine, and nothing when it is already there. Go itself must exist.
set -euo pipefail
pkgs=(clang llvm libbpf-dev bpftool xdp-tools memcached netsniff-ng nftables tcpdump iproute2 python3-scapy)
# The reflection end-to-end test's DNS client, dig (a client tool: it runs
# nothing on the host). Its servers come from testbins.sh below, not from
# here: installing chrony or a DNS server would change the host's time and
# name services.
pkgs+=(bind9-dnsutils)
# The agent's tests: a real Prometheus (and promtool), systemd-analyze.
pkgs+=(prometheus systemd)
# make image and the container tests.
pkgs+=(podman buildah runc)
# make vmtest: qemu boots the test kernels, busybox-static is their initramfs,
# kmod's depmod/modprobe resolve their modules, xz unpacks compressed ones.
pkgs+=(qemu-system-x86 busybox-static kmod xz-utils util-linux debian-archive-keyring)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
command -v kubectl >/dev/null || missing+=(kubernetes-client) # kubectl kustomize: the manifests' tests
if ((${#missing[@]})); then
	echo "deps: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The reflection test's real NTP and DNS servers (chronyd, dnsmasq), as
# package files unpacked into a cache and never installed: installing chrony
# removes systemd-timesyncd and starts chronyd on the host's clock. See
# testbins.sh.
"$(dirname "$0")/testbins.sh" chrony:usr/sbin/chronyd dnsmasq-base:usr/sbin/dnsmasq
# Debian's memcached package starts a system instance on 127.0.0.1; the lab
# runs its own inside a namespace and leaves the host's alone.
command -v go >/dev/null || { echo "deps: Go is required (https://go.dev/dl), not found in PATH" >&2; exit 1; }
