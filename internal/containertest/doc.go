// Package containertest runs xdpguard's container image under a real
// container runtime (podman, with runc) the way the kubelet runs the
// DaemonSet's pod: the DaemonSet's command, args, environment, capabilities
// and nothing more, its read-only root, its user, its memory and CPU
// limits, the host's BPF filesystem and the ConfigMap's files mounted where
// the DaemonSet mounts them. Everything is read from the rendered manifests
// (internal/deploytest), so the test runs what operators deploy.
//
// Instead of the host's network (hostNetwork), the pod joins the reflector
// namespace of a lab (internal/lab), which plays the node: a veth, a real
// memcached with UDP on, an attacker and a victim. The test never touches
// this machine's own interfaces.
//
// What the test changes in the ConfigMap's config, and why: interfaces
// (include: the lab's refl0, exclude: none: the shipped globs name a
// node's uplinks, and the lab node has none), and pin_path (a random
// directory under the same mount, so that runs never collide and the
// test removes exactly what it made); the DaemonSet's XDPGUARD_PIN_PATH
// follows pin_path. Everything else (ports, mode, fragments, egress,
// allow files, metrics.listen, on_stop) is the shipped file's.
//
// Clean-up: every container, namespace and pin the tests make goes when
// they end; the image `make image` tagged (localhost/xdpguard:latest and
// :VERSION, what the DaemonSet names) stays, as after any `make image`; the
// reproducibility test's second build is untagged.
//
// Settings this VM needs live here only, never in the image or the
// manifests: podman's runc runtime (crun rejects the VM's hybrid cgroups)
// and lowered nofile/nproc ulimits (the VM grants no CAP_SYS_RESOURCE).
package containertest
