package e2e

import (
	"os"
	"path/filepath"
	"testing"
)

// defaultTestBins is where scripts/testbins.sh (run by scripts/deps.sh)
// unpacks the servers the tests run but the host must not have installed:
// Debian's chrony and dnsmasq-base, as package files, never installed.
// XDPGUARD_TESTBINS overrides it, for the script and the tests alike.
const defaultTestBins = "/var/cache/xdpguard-testbins"

// testBin returns the absolute path of a binary inside an unpacked package
// (pkg "chrony", rel "usr/sbin/chronyd"). It fails the test, never skips it,
// when the binary is not there: the host's own installed copies, if any, are
// deliberately not used.
func testBin(t *testing.T, pkg, rel string) string {
	t.Helper()
	root := os.Getenv("XDPGUARD_TESTBINS")
	if root == "" {
		root = defaultTestBins
	}
	p := filepath.Join(root, pkg, rel)
	fi, err := os.Stat(p)
	if err == nil && (fi.IsDir() || fi.Mode()&0o111 == 0) {
		err = os.ErrPermission
	}
	if err != nil {
		t.Fatalf("%s from Debian's %s package is missing (%v): run scripts/deps.sh as root, which unpacks it there without installing it", p, pkg, err)
	}
	return p
}
