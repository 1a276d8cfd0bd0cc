#!/usr/bin/env bash
# The project's test command (`sudo make test`): pure Go units, the BPF
# programs under BPF_PROG_TEST_RUN against the reference model, the
# end-to-end tests in network namespaces on real servers, the agent, the
# container image. As root, a skipped test is a failure: every layer must run.
#
# The agent's package runs on its own, after the rest: its tests measure the
# agent against real time (a new interface protected within 1 s of coming
# up), which is the agent's figure only when no other package is verifying
# hundreds of programs on the same two CPUs.
set -uo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp /tmp/xdpguard-test.XXXXXX)
trap 'rm -f "$log"' EXIT

timed=./internal/agent
mapfile -t rest < <(go list ./... | grep -v -x "github.com/xdpguard/xdpguard/${timed#./}")
go test -race -count=1 -timeout 25m -v "${rest[@]}" >"$log" 2>&1
rc=$?
go test -race -count=1 -timeout 15m -v "$timed" >>"$log" 2>&1
rc2=$?
((rc == 0)) && rc=$rc2

if ((rc != 0)); then
	# The whole story of what failed, then the package summary.
	grep -v -E '^(=== (RUN|PAUSE|CONT|NAME)|--- PASS)' "$log"
else
	grep -E '^(ok|FAIL|---|panic)' "$log" | grep -v -- '--- PASS'
fi
passed=$(grep -c -E '^\s*--- PASS' "$log")
failed=$(grep -c -E '^\s*--- FAIL' "$log")
skipped=$(grep -c -E '^\s*--- SKIP' "$log")
echo "tests: $passed passed, $failed failed, $skipped skipped"

if ((rc == 0 && skipped > 0)) && [[ $(id -u) == 0 ]]; then
	echo "test: these tests skipped although running as root; every test must run:" >&2
	grep -A2 -E '^\s*--- SKIP' "$log" >&2
	exit 1
fi
exit "$rc"
