#!/usr/bin/env bash
# Fetches Debian's stock kernel for one tested series and unpacks it into the
# cache, never installing it: `kernel.sh 5.10|6.1|6.12` prints the unpacked
# tree's directory. A private apt configuration (its own sources list, lists,
# status and archive directories under the cache) resolves the newest image
# the suite's linux-image-amd64 depends on, so nothing is pinned that can
# vanish from the archive, and the host's apt state is never touched.
set -euo pipefail
series=${1:?usage: kernel.sh 5.10|6.1|6.12}
cache=${VMTEST_CACHE:-/var/cache/xdpguard-vmtest}
mirror=${VMTEST_MIRROR:-http://deb.debian.org}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg

case $series in
5.10) suites=("debian bullseye" "debian-security bullseye-security") ;; # Debian 11
6.1) suites=("debian bookworm" "debian-security bookworm-security") ;;   # Debian 12
6.12) suites=("debian bookworm-backports") ;;                            # Debian 12 backports
*) echo "vmtest: unknown KERNEL '$series': use 5.10, 6.1 or 6.12" >&2; exit 2 ;;
esac

apt=$cache/apt/$series
mkdir -p "$apt/lists/partial" "$apt/archives/partial" "$apt/parts"
# One fetch per series at a time: concurrent runs share the cache.
exec 9>"$apt/lock"
flock 9
: >"$apt/sources.list"
for s in "${suites[@]}"; do
	echo "deb [signed-by=$keyring] $mirror/${s% *} ${s#* } main" >>"$apt/sources.list"
done
[[ -f $apt/status ]] || : >"$apt/status"
opts=(-o "Dir::Etc::SourceList=$apt/sources.list" -o "Dir::Etc::SourceParts=$apt/parts"
	-o "Dir::Etc::Preferences=$apt/preferences" -o "Dir::Etc::PreferencesParts=$apt/parts"
	-o "Dir::State=$apt" -o "Dir::State::Lists=$apt/lists" -o "Dir::State::status=$apt/status"
	-o "Dir::Cache=$apt" -o "Dir::Cache::Archives=$apt/archives"
	-o APT::Architecture=amd64 -o APT::Architectures::=amd64 -o Acquire::Languages=none -o APT::Sandbox::User=root -q=2)

# Refresh the index at most once a day: CI reruns on the same machine reuse it.
if [[ -z $(find "$apt/lists" -maxdepth 1 -name '*_Packages' -mmin -1440 2>/dev/null) ]]; then
	apt-get "${opts[@]}" update >&2
fi
# The metapackage names the suite's current ABI (linux-image-5.10.0-46-amd64,
# linux-image-6.12.57+deb12-amd64...): signed, with vmlinuz and modules.
# Resolved once per index refresh: apt-cache reads the whole index.
if [[ ! -s $apt/resolved || -n $(find "$apt/lists" -maxdepth 1 -name '*_Packages' -newer "$apt/resolved") ]]; then
	image=$(apt-cache "${opts[@]}" depends linux-image-amd64 |
		awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')
	[[ -n $image ]] || { echo "vmtest: no linux-image-amd64 in ${suites[*]}" >&2; exit 1; }
	version=$(apt-cache "${opts[@]}" show "$image" | awk '/^Version:/ { print $2; exit }')
	echo "$image $version" >"$apt/resolved"
fi
read -r image version <"$apt/resolved"
tree=$cache/kernels/$series/$image-$version
if [[ ! -f $tree/.unpacked ]]; then
	echo "vmtest: fetching $image $version" >&2
	(cd "$apt/archives" && apt-get "${opts[@]}" download "$image" >&2)
	deb=$(find "$apt/archives" -maxdepth 1 -name "${image}_*.deb" | sort -V | tail -1)
	rm -rf "$tree" && mkdir -p "$tree"
	dpkg-deb -x "$deb" "$tree"
	kver=$(ls "$tree/lib/modules")
	depmod -b "$tree" "$kver"
	touch "$tree/.unpacked"
	# Older trees of this series are superseded; keep the cache from growing.
	find "$cache/kernels/$series" -mindepth 1 -maxdepth 1 ! -path "$tree" -exec rm -rf {} +
	find "$apt/archives" -maxdepth 1 -name '*.deb' ! -name "${image}_*" -delete
fi
echo "$tree"
