package profiles

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// readmeRow is the line of README.md's factor table for p.
func readmeRow(p Profile) string {
	ports := make([]string, len(p.Ports))
	for i, n := range p.Ports {
		ports[i] = fmt.Sprint(n)
	}
	return fmt.Sprintf("| `%s` | %s | %s | %s | %s | [%s](%s) |", p.Name, p.Protocol, strings.Join(ports, ", "), p.Direction, p.Factor.Text, p.SourceTitle, p.Source)
}

// The README's table is the built-in one, row for row, in order: a figure
// changed in one place and not the other fails here.
func TestReadmeTable(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	var rows []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "| `") && strings.Contains(line, "](http") {
			rows = append(rows, line)
		}
	}
	all := All()
	if len(rows) != len(all) {
		t.Errorf("README.md has %d profile rows, the table %d", len(rows), len(all))
	}
	for i, p := range all {
		want := readmeRow(p)
		if i >= len(rows) || rows[i] != want {
			t.Errorf("README.md profile row %d:\n got %q\nwant %q", i, at(rows, i), want)
		}
	}
}

func at(s []string, i int) string {
	if i < len(s) {
		return s[i]
	}
	return ""
}
