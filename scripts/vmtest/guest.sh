#!/bin/bash
# vmtest stage 2, PID 1 inside the guest after switch_root, on the host's root
# (read-only 9p under a tmpfs overlay): sets up what a booted host has (proc,
# sys, bpffs, module autoloading, loopback), runs each test binary of the plan
# the host wrote into the results directory (the one writable 9p share),
# writes each one's output and exit status there, and powers off.
set -u
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts && mount -t tmpfs shm /dev/shm
mount -t tmpfs run /run
mount -t bpf bpf /sys/fs/bpf
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
results=
for arg in $(</proc/cmdline); do
	case $arg in vmtest_results=*) results=${arg#*=} ;; esac
done
off() {
	sync
	echo o >/proc/sysrq-trigger
	sleep 30
}
console() { echo "vmtest: $*" >/dev/console; }
mount -t 9p -o trans=virtio,version=9p2000.L,rw,msize=524288 hostresults "$results" || { console "cannot mount results at $results"; off; }
# Autoloading: the kernel runs this for veth, sch_ingress, cls_bpf...; the
# modules tree of the booted kernel is bound at /lib/modules by stage 1.
echo /usr/sbin/modprobe >/proc/sys/kernel/modprobe
# The device nodes that load their module when opened (/dev/net/tun...), as
# systemd-tmpfiles makes them on a booted host from depmod's list.
while read -r _ name devno; do
	[[ $devno =~ ^([cb])([0-9]+):([0-9]+)$ ]] || continue
	mkdir -p "$(dirname "/dev/$name")"
	[[ -e /dev/$name ]] || mknod -m 0600 "/dev/$name" "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}" "${BASH_REMATCH[3]}"
done <"/lib/modules/$(uname -r)/modules.devname"
chmod 0666 /dev/net/tun /dev/fuse 2>/dev/null
ip link set lo up
hostname vmtest
console "up in $(cut -d' ' -f1 /proc/uptime) s: $(uname -r)"
cut -d' ' -f1 /proc/uptime >"$results/boot"

# The plan: environment first, then one line per package: name dir binary timeout.
# shellcheck source=/dev/null
. "$results/env"
# A fresh /tmp, as a booted host has; a tree cloned under the host's /tmp
# (git clone . /tmp/x && .ci/run) is carried over into it.
case $VMTEST_ROOT in /tmp/*) mkdir -p /mnt/tree && mount --bind "$VMTEST_ROOT" /mnt/tree ;; esac
mount -t tmpfs tmp /tmp
case $VMTEST_ROOT in /tmp/*) mkdir -p "$VMTEST_ROOT" && mount --move /mnt/tree "$VMTEST_ROOT" ;; esac
while read -r name dir bin timeout; do
	[[ -n $name ]] || continue
	start=$(cut -d' ' -f1 /proc/uptime)
	console "run $name"
	(cd "$dir" && exec "$bin" -test.v -test.count=1 -test.timeout="$timeout" ${VMTEST_RUN:+"-test.run=$VMTEST_RUN"}) >"$results/$name.log" 2>&1 </dev/null
	rc=$?
	end=$(cut -d' ' -f1 /proc/uptime)
	echo "$rc $start $end" >"$results/$name.rc"
	console "done $name rc=$rc"
	sync
done <"$results/plan"
echo finished >"$results/finished"
off
