#!/usr/bin/env bash
# Vendors the few kernel and libbpf headers the BPF C code needs into bpf/include,
# so that generating the objects never depends on which libbpf-dev or
# linux-libc-dev a machine happens to have. Re-run only to move to newer headers;
# the versions below are recorded in bpf/include/VERSIONS.
set -euo pipefail
cd "$(dirname "$0")/.."
dst=bpf/include
mkdir -p "$dst/bpf" "$dst/linux"
for f in bpf_helpers.h bpf_helper_defs.h bpf_endian.h; do
	cp "/usr/include/bpf/$f" "$dst/bpf/$f"
done
for f in bpf.h bpf_common.h; do
	cp "/usr/include/linux/$f" "$dst/linux/$f"
done
{
	echo "# Headers vendored by scripts/update-bpf-headers.sh from Debian packages:"
	dpkg-query -W -f='${Package} ${Version}\n' libbpf-dev linux-libc-dev
} >"$dst/VERSIONS"
