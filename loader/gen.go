package loader

// The BPF objects are generated from bpf/ and committed, so that building
// xdpguard needs only Go. `make generate` (clang) rewrites them; CI checks
// that the committed output is current.
//
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror" -target bpfel -type reason -type mode -type frag_policy -type config -type lpm_v4_key -type lpm_v6_key -type frag4_key -type frag6_key -type frag_verdict -type frag4_slot -type frag6_slot -type req4_key -type req6_key -type counter -type sample_count -type sample_budget xdpguard ../bpf/xdpguard.c -- -I../bpf/include
