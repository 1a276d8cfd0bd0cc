#!/usr/bin/env bash
# `make vmtest [KERNEL=5.10|6.1|6.12]`: runs the test packages that exercise
# the kernel inside Debian's stock kernels, booted under qemu (TCG: no KVM is
# needed), and reports per package exactly as `go test` does. Without
# arguments it runs all three series. Exit status 0 only when every package
# passes on every kernel with no test skipped.
#
#   scripts/vmtest.sh [5.10] [6.1] [6.12]
#
# Environment:
#   VMTEST_CACHE     kernels, initramfs images and logs (/var/cache/xdpguard-vmtest)
#   VMTEST_LOGS      where each kernel's logs go (VMTEST_CACHE/logs)
#   VMTEST_PKGS      packages to run (default below)
#   VMTEST_TIMEOUT   -test.timeout of each package in the guest (default 15m)
#   VMTEST_MEM, VMTEST_CPUS  guest size (2G, 2)
#   VMTEST_JOBS      guests booted at once (default: all the kernels asked for)
#   VMTEST_TCG_THREAD  qemu's TCG threading, single (default) or multi
#   VMTEST_TIME_SCALE  how much the tests' deadlines stretch in a guest (20)
#   VMTEST_RUN       only the tests this -test.run pattern selects (developing)
#
# How a run works: kernel.sh fetches and unpacks the kernel into the cache
# (never installing it); the initramfs holds static busybox, stage 1 (init)
# and the modules needed to reach the host's root; the guest mounts the host's
# root read-only over 9p under a tmpfs overlay, so it runs the host's
# memcached, ip, nsenter, go and the test binaries built here; stage 2
# (guest.sh) writes each package's output into a second, writable 9p share.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
here=$root/scripts/vmtest
cache=${VMTEST_CACHE:-/var/cache/xdpguard-vmtest}
timeout=${VMTEST_TIMEOUT:-15m}
[[ $timeout =~ ^[0-9]+m$ ]] || { echo "vmtest: VMTEST_TIMEOUT '$timeout' must be whole minutes, like 15m" >&2; exit 2; }
mem=${VMTEST_MEM:-2G}
cpus=${VMTEST_CPUS:-2}
accel_thread=${VMTEST_TCG_THREAD:-single}
[[ $accel_thread == single || $accel_thread == multi ]] || { echo "vmtest: VMTEST_TCG_THREAD '$accel_thread' must be single or multi" >&2; exit 2; }
kernels=("$@")
((${#kernels[@]})) || kernels=(5.10 6.1 6.12)

# The packages whose tests load programs into the kernel: the data plane
# table tests and loader lifecycle, the CLI, end to end in namespaces, the
# agent. The pure-Go packages behave the same on every kernel and stay with
# `make test`. Tests hold xdpguard to real-time bounds (the agent protects a
# new interface within 1 s of link up) that a guest emulated 13-30 times
# slower meets only in its own time: every deadline and bound the tests take
# from nstest is stretched by VMTEST_TIME_SCALE (XDPGUARD_TEST_TIME_SCALE in
# the guest).
default_pkgs=(./loader ./cmd/xdpguard ./internal/e2e ./internal/agent)
time_scale=${VMTEST_TIME_SCALE:-20}
[[ $time_scale =~ ^[1-9][0-9]*$ ]] || { echo "vmtest: VMTEST_TIME_SCALE '$time_scale' must be a whole number, like 20" >&2; exit 2; }
read -r -a pkgs <<<"${VMTEST_PKGS:-${default_pkgs[*]}}"

die() { echo "vmtest: $*" >&2; exit 2; }
[[ $(id -u) == 0 ]] || die "needs root (bpffs, qemu's 9p export of /): run 'sudo make vmtest'"
for tool in qemu-system-x86_64 depmod modprobe xz; do
	command -v "$tool" >/dev/null || die "$tool not found: run scripts/deps.sh"
done
if [[ ! -x /bin/busybox ]] || ldd /bin/busybox >/dev/null 2>&1; then
	die "/bin/busybox is missing or not the static one: run scripts/deps.sh (busybox-static)"
fi
for k in "${kernels[@]}"; do
	case $k in 5.10 | 6.1 | 6.12) ;; *) die "unknown KERNEL '$k': use 5.10, 6.1 or 6.12" ;; esac
done

# Everything the guest reads must be on the host's root file system and not
# under /run or /dev, which the guest mounts afresh (the tree itself may be
# under /tmp: the guest carries it into its fresh /tmp).
mkdir -p "$cache"
run=$(mktemp -d "$cache/run.XXXXXX")
trap 'rm -rf "$run"' EXIT
chmod 0755 "$run"

# Test binaries built here once for all kernels, as `go test` would build them.
t0=$SECONDS
echo "vmtest: building ${pkgs[*]}"
for p in "${pkgs[@]}"; do
	name=${p#./}
	(cd "$root" && go test -c -o "$run/bin/${name//\//_}.test" "$p")
done
# The CLI and e2e tests `go build -o OUT ./cmd/xdpguard` in the guest, which
# takes minutes under TCG: every main package under cmd/ is built here by
# that same command, and the guest's `go` (vmtest/go) hands these out.
# So is the Makefile's own build (`make install` in internal/agent's
# TestMakeInstall): `go build -ldflags "$(LDFLAGS)" -o OUT PKG`, with the
# LDFLAGS make computes here, from the same tree, as it will in the guest.
mkdir -p "$run/prebuilt/ldflags"
ldflags=$(make -s --no-print-directory -C "$root" print-LDFLAGS)
printf '%s' "$ldflags" >"$run/prebuilt/ldflags.txt"
while read -r dir; do
	rel=${dir#"$root"/}
	(cd "$root" && go build -o "$run/prebuilt/${rel//\//_}" "./$rel")
	(cd "$root" && go build -ldflags "$ldflags" -o "$run/prebuilt/ldflags/${rel//\//_}" "./$rel")
done < <(cd "$root" && go list -f '{{if eq .Name "main"}}{{.Dir}}{{end}}' ./cmd/...)
echo "vmtest: built in $((SECONDS - t0)) s"

# The guest's environment: Go's, so its `go build` finds this cache and
# modules without a network.
{
	printf 'export PATH=%q\n' "$here/gobin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	printf 'export VMTEST_REAL_GO=%q VMTEST_ROOT=%q VMTEST_PREBUILT=%q\n' "$(command -v go)" "$(cd "$root" && pwd -P)" "$run/prebuilt"
	printf 'export HOME=%q\n' "$HOME"
	for v in GOCACHE GOMODCACHE GOPATH GOFLAGS GOROOT; do
		printf 'export %s=%q\n' "$v" "$(go env "$v")"
	done
	echo 'export GOPROXY=off GOTOOLCHAIN=local GOTELEMETRY=off'
	echo "export XDPGUARD_TEST_TIME_SCALE=$time_scale"
	printf 'export VMTEST_RUN=%q\n' "${VMTEST_RUN:-}"
} >"$run/env"

# initramfs builds one image per kernel tree and initramfs recipe, cached.
initramfs() {
	local tree=$1 kver img stage mods
	kver=$(ls "$tree/lib/modules")
	img=$tree/initramfs-$(cat "$here/init" "$0" /bin/busybox | sha256sum | cut -c1-12).cpio.gz
	if [[ ! -f $img ]]; then
		stage=$(mktemp -d)
		mkdir -p "$stage"/{bin,proc,sys,dev,modules}
		cp /bin/busybox "$stage/bin/busybox"
		for a in $(/bin/busybox --list); do [[ $a == busybox ]] || ln -s busybox "$stage/bin/$a"; done
		cp "$here/init" "$stage/init"
		# virtio-pci, 9p, overlay and the rng are modules on some of these
		# kernels and built in on others: modprobe says which, in load order.
		mods=$(for m in virtio_pci 9pnet_virtio 9p overlay virtio_rng; do
			modprobe -d "$tree" -S "$kver" --show-depends "$m"
		done | awk '$1 == "insmod" && !seen[$2]++ { print $2 }')
		: >"$stage/modules/order"
		for m in $mods; do
			local base
			base=$(basename "$m")
			case $m in
			*.xz) xz -dc "$m" >"$stage/modules/${base%.xz}"; base=${base%.xz} ;;
			*.zst) zstd -qdc "$m" >"$stage/modules/${base%.zst}"; base=${base%.zst} ;;
			*) cp "$m" "$stage/modules/$base" ;;
			esac
			echo "$base" >>"$stage/modules/order"
		done
		(cd "$stage" && find . | /bin/busybox cpio -o -H newc | gzip -1) >"$img.new"
		mv "$img.new" "$img"
		rm -rf "$stage"
		find "$tree" -maxdepth 1 -name 'initramfs-*.cpio.gz' ! -path "$img" -delete
	fi
	echo "$img"
}

# report prints one package's result as go test does, from its log and the
# exit status stage 2 recorded, and fails it for a skipped test (as root,
# every test must run) or a missing status (the guest died).
report() {
	local pkg=$1 log=$2 rcfile=$3 rc start end secs
	result="FAIL -"
	if [[ ! -f $rcfile ]]; then
		echo "FAIL	$pkg	(no result: the guest stopped before the package finished)"
		[[ -f $log ]] && grep -v -E '^\s*(=== (RUN|PAUSE|CONT|NAME)|--- PASS)' "$log" | tail -40
		return 1
	fi
	read -r rc start end <"$rcfile"
	secs=$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.1f", e - s }')
	result="FAIL ${secs}s"
	if ((rc != 0)); then
		# The whole story of what failed, as scripts/test.sh prints it.
		grep -v -E '^\s*(=== (RUN|PAUSE|CONT|NAME)|--- PASS)' "$log" | grep -v -E '^(PASS|FAIL)$' | tail -150
		echo "FAIL	$pkg	${secs}s"
		return 1
	fi
	if grep -q -E '^\s*--- SKIP' "$log"; then
		grep -A2 -E '^\s*--- SKIP' "$log"
		echo "FAIL	$pkg	${secs}s (tests skipped as root: every test must run)"
		return 1
	fi
	echo "ok  	$pkg	${secs}s"
	result="ok ${secs}s"
}

module=$(cd "$root" && go list -m)

# Every kernel is fetched and its initramfs built first, one after the other
# (they share one apt cache); then the guests boot side by side, at most
# VMTEST_JOBS at a time.
declare -A tree img vmlinuz kver prep
for k in "${kernels[@]}"; do
	t0=$SECONDS
	tree[$k]=$("$here/kernel.sh" "$k")
	img[$k]=$(initramfs "${tree[$k]}")
	vmlinuz[$k]=$(ls "${tree[$k]}"/boot/vmlinuz-*)
	kver[$k]=$(ls "${tree[$k]}/lib/modules")
	prep[$k]=$((SECONDS - t0))
done

# guest boots kernel $1 and runs the plan in it; what it leaves is in
# $run/$1 (the packages' logs and statuses, qemu's exit status, its time).
guest() {
	local k=$1 out logs limit t1 qrc
	out=$run/$k
	mkdir -p "$out"
	cp "$run/env" "$out/env"
	: >"$out/plan"
	for p in "${pkgs[@]}"; do
		name=${p#./}
		echo "${name//\//_} $root/$name $run/bin/${name//\//_}.test $timeout" >>"$out/plan"
	done
	logs=${VMTEST_LOGS:-$cache/logs}/$k
	rm -rf "$logs" && mkdir -p "$logs"
	# A whole guest may not outlive every package's own timeout plus a boot.
	limit=$(( (${timeout%m} * ${#pkgs[@]} + 5) * 60 ))
	t1=$SECONDS
	qrc=0
	timeout --foreground "$limit" qemu-system-x86_64 \
		-accel "tcg,thread=$accel_thread" -cpu max,-cx16 -smp "$cpus" -m "$mem" \
		-display none -monitor none -serial stdio -no-reboot -nic none \
		-device virtio-rng-pci \
		-kernel "${vmlinuz[$k]}" -initrd "${img[$k]}" \
		-append "console=ttyS0 panic=-1 quiet loglevel=3 random.trust_cpu=on vmtest_tree=${tree[$k]} vmtest_guest=$here/guest.sh vmtest_results=$out" \
		-virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap" \
		-virtfs "local,path=$out,mount_tag=hostresults,security_model=none" \
		</dev/null >"$logs/console.log" 2>&1 || qrc=$?
	echo "$qrc" >"$out/qemu.rc"
	echo $((SECONDS - t1)) >"$out/vm.secs"
	cp "$out"/*.log "$logs/" 2>/dev/null || true
}

jobs=${VMTEST_JOBS:-${#kernels[@]}}
[[ $jobs =~ ^[1-9][0-9]*$ ]] || die "VMTEST_JOBS '$jobs' must be a whole number of guests, like 3"
echo "vmtest: booting ${kernels[*]}, $jobs at a time (tcg thread=$accel_thread, $cpus vCPUs, $mem each)"
running=0
for k in "${kernels[@]}"; do
	if ((running >= jobs)); then
		wait -n || true
		running=$((running - 1))
	fi
	guest "$k" &
	running=$((running + 1))
done
wait

status=0
summary=()
table=()
for k in "${kernels[@]}"; do
	echo
	echo "==> kernel $k"
	out=$run/$k
	logs=${VMTEST_LOGS:-$cache/logs}/$k
	grep '^vmtest' "$logs/console.log" || true
	if [[ ! -f $out/finished ]]; then
		echo "vmtest: the $k guest did not finish (qemu exit $(cat "$out/qemu.rc" 2>/dev/null || echo '?')); its console:" >&2
		tail -80 "$logs/console.log" >&2
		status=1
	fi
	for p in "${pkgs[@]}"; do
		name=${p#./}
		if ! report "$module/$name [${kver[$k]}]" "$out/${name//\//_}.log" "$out/${name//\//_}.rc"; then
			status=1
		fi
		table+=("$(printf '%-6s %-16s %s' "$k" "$name" "$result")")
	done
	boot=$(cat "$out/boot" 2>/dev/null || echo '?')
	summary+=("$k (${kver[$k]}): kernel+initramfs ${prep[$k]} s, boot to tests ${boot} s, whole VM $(cat "$out/vm.secs" 2>/dev/null || echo '?') s; logs in $logs")
done
echo
printf 'vmtest: %s\n' "${summary[@]}"
echo
printf '%s\n' "${table[@]}"
exit "$status"
