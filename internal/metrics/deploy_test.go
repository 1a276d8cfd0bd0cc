package metrics

import (
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/xdpguard/xdpguard/loader"
)

// The operations kit in deploy/: Prometheus alerting rules, their unit
// tests, and a Grafana dashboard. These tests keep them true to what the
// agent exports.

var (
	rulesFile     = filepath.Join("..", "..", "deploy", "prometheus", "xdpguard-rules.yml")
	rulesTestFile = filepath.Join("..", "..", "deploy", "prometheus", "xdpguard-rules.test.yml")
	dashboardFile = filepath.Join("..", "..", "deploy", "grafana", "xdpguard-dashboard.json")
)

// foreignSeries are series the kit uses that Prometheus itself makes, not
// the agent: up is the scrape's health.
var foreignSeries = map[string]bool{"up": true}

func promtool(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("promtool")
	if err != nil {
		t.Fatalf("promtool not found: install it (scripts/deps.sh, Debian package prometheus): %v", err)
	}
	return bin
}

// TestPrometheusRules: promtool accepts the rules file and its unit tests
// pass (every alert fires on the series that should fire it, and not on
// those that should not).
func TestPrometheusRules(t *testing.T) {
	bin := promtool(t)
	for _, args := range [][]string{
		{"check", "rules", filepath.Base(rulesFile)},
		{"test", "rules", filepath.Base(rulesTestFile)},
	} {
		cmd := exec.Command(bin, args...)
		cmd.Dir = filepath.Dir(rulesFile)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestRulesTestsCoverEveryAlert: each alert of the rules file has a
// firing case and a not-firing case in the unit tests.
func TestRulesTestsCoverEveryAlert(t *testing.T) {
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	readYAML(t, rulesFile, &rules)
	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `yaml:"alertname"`
				ExpAlerts []any  `yaml:"exp_alerts"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	readYAML(t, rulesTestFile, &tests)
	firing, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				firing[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			n++
			if !firing[r.Alert] || !quiet[r.Alert] {
				t.Errorf("alert %s: firing case %v, not-firing case %v in %s; want both", r.Alert, firing[r.Alert], quiet[r.Alert], rulesTestFile)
			}
		}
	}
	if n == 0 {
		t.Fatalf("no alerts in %s", rulesFile)
	}
}

func readYAML(t *testing.T, file string, v any) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

// exportedSeries is every series name the agent's /metrics serves: a real
// gather of the agent's registry over a fake kernel that has taken drop
// samples, after the agent state has seen an attack (vectors without
// children export nothing).
func exportedSeries(t *testing.T) map[string]bool {
	t.Helper()
	state := NewAgentState()
	state.AttackStarted("eth0")
	snap := fakeSnapshot()
	snap.Stats[0].Samples = map[string]loader.SampleCounter{"drop_request": {Sampled: 3, Suppressed: 4}}
	mfs, err := NewRegistry(staticSource(snap), state, "test").Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	return names
}

// seriesConstants are the string constants of this package that name
// series (xdpguard_*), read from its source.
func seriesConstants(t *testing.T) map[string]string {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	out := map[string]string{}
	for _, file := range files {
		if strings.HasSuffix(file, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, file, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, name := range vs.Names {
					if i >= len(vs.Values) {
						continue
					}
					lit, ok := vs.Values[i].(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						continue
					}
					s, err := strconv.Unquote(lit.Value)
					if err == nil && strings.HasPrefix(s, "xdpguard_") && name.IsExported() {
						out[name.Name] = s
					}
				}
			}
		}
	}
	return out
}

// TestSeriesConstantsExported: every exported series-name constant is a
// series the agent's registry really serves, so the constants are a true
// list of the agent's series.
func TestSeriesConstantsExported(t *testing.T) {
	consts := seriesConstants(t)
	if len(consts) < 10 {
		t.Fatalf("found only %d series constants: %v", len(consts), consts)
	}
	exported := exportedSeries(t)
	for name, series := range consts {
		if !exported[series] {
			t.Errorf("constant %s = %q is not served by the agent's registry", name, series)
		}
	}
}

// promqlKeywords are identifiers in PromQL that are not series.
var promqlKeywords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true, "by": true, "without": true,
	"on": true, "ignoring": true, "group_left": true, "group_right": true, "start": true, "end": true,
	"inf": true, "nan": true,
}

var (
	promqlStrings   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|` + "`[^`]*`")
	promqlMatchers  = regexp.MustCompile(`\{[^{}]*\}`)
	promqlRanges    = regexp.MustCompile(`\[[^\[\]]*\]`)
	promqlGrouping  = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	promqlIdent     = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*`)
	grafanaLabelVal = regexp.MustCompile(`^\s*label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$`)
)

// seriesIn returns the series names a PromQL expression selects: the
// identifiers left once strings, label matchers, ranges and grouping
// clauses are taken out, other than functions (followed by '(') and
// keywords.
func seriesIn(expr string) []string {
	e := promqlStrings.ReplaceAllString(expr, `""`)
	e = promqlMatchers.ReplaceAllString(e, " ")
	e = promqlRanges.ReplaceAllString(e, " ")
	e = promqlGrouping.ReplaceAllString(e, " ")
	var out []string
	for _, loc := range promqlIdent.FindAllStringIndex(e, -1) {
		if loc[0] > 0 && (e[loc[0]-1] >= '0' && e[loc[0]-1] <= '9' || e[loc[0]-1] == '.') {
			continue // a number's exponent or a duration's unit: 1e3, 5m
		}
		id := e[loc[0]:loc[1]]
		if promqlKeywords[strings.ToLower(id)] {
			continue
		}
		if rest := strings.TrimLeft(e[loc[1]:], " \t\n"); strings.HasPrefix(rest, "(") {
			continue // a function or aggregation
		}
		out = append(out, id)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

func TestSeriesIn(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`sum by (instance, interface) (rate(xdpguard_packets_total{reason=~"drop_.*|would_drop", interface=~"$interface"}[$__rate_interval])) > 1e3`,
			[]string{"xdpguard_packets_total"}},
		{`xdpguard_map_entries{map=~"allow4|allow6"} / on (instance, map) group_left xdpguard_map_max_entries > 0.9`,
			[]string{"xdpguard_map_entries", "xdpguard_map_max_entries"}},
		{`absent(up{job="xdpguard"}) or vector(0) unless bogus_series offset 5m`, []string{"bogus_series", "up"}},
		{`time() - xdpguard_config_last_reload_success_timestamp_seconds`, []string{"xdpguard_config_last_reload_success_timestamp_seconds"}},
		{`count by (version) (xdpguard_build_info{version="xdpguard_not_a_series"})`, []string{"xdpguard_build_info"}},
	} {
		if got := seriesIn(tc.expr); !slices.Equal(got, tc.want) {
			t.Errorf("seriesIn(%s) = %v, want %v", tc.expr, got, tc.want)
		}
	}
}

// query is one PromQL expression of the kit and where it is.
type query struct {
	where, expr string
}

func rulesQueries(t *testing.T) []query {
	t.Helper()
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert  string `yaml:"alert"`
				Record string `yaml:"record"`
				Expr   string `yaml:"expr"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	readYAML(t, rulesFile, &rules)
	var out []query
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			out = append(out, query{rulesFile + ": " + r.Alert + r.Record, r.Expr})
		}
	}
	return out
}

// dashboardQueries finds every PromQL expression in the dashboard: panel
// targets and annotations ("expr"), and the selectors of the template
// variables' label_values(...) queries.
func dashboardQueries(t *testing.T) []query {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d any
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	var out []query
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, c := range v {
				p := path + "." + k
				if s, ok := c.(string); ok {
					switch k {
					case "expr":
						out = append(out, query{p, s})
					case "definition", "query":
						if m := grafanaLabelVal.FindStringSubmatch(s); m != nil {
							out = append(out, query{p, m[1]})
						} else if strings.Contains(path, "templating") && k == "definition" {
							t.Errorf("%s: %s: a variable query that is not label_values(SELECTOR, LABEL): %q", dashboardFile, p, s)
						}
					}
					continue
				}
				walk(p, c)
			}
		case []any:
			for i, c := range v {
				walk(fmt.Sprintf("%s[%d]", path, i), c)
			}
		}
	}
	walk("", d)
	return out
}

// TestDashboardAndRulesUseExportedSeries: every series any query of the
// dashboard or the rules names is one the agent serves (or Prometheus'
// own up); a query with no series at all would be a mistake too.
func TestDashboardAndRulesUseExportedSeries(t *testing.T) {
	exported := exportedSeries(t)
	qs := append(rulesQueries(t), dashboardQueries(t)...)
	if len(qs) < 20 {
		t.Fatalf("found only %d queries in the rules and the dashboard", len(qs))
	}
	used := map[string]bool{}
	for _, q := range qs {
		names := seriesIn(q.expr)
		if len(names) == 0 {
			t.Errorf("%s: no series in %q", q.where, q.expr)
		}
		for _, n := range names {
			used[n] = true
			if !exported[n] && !foreignSeries[n] {
				t.Errorf("%s: %q is not a series the agent exports (in %q)", q.where, n, q.expr)
			}
		}
	}
	// The dashboard shows the series the issue asks for.
	for _, n := range []string{PacketsTotal, BytesTotal, AttackActive, MapEntries, MapMaxEntries, Attached, ConfigValid,
		ReconcileErrors, IfacesWanted, IfacesProtected, SamplesTotal, SamplesSuppr} {
		if !used[n] {
			t.Errorf("neither the dashboard nor the rules use %s", n)
		}
	}
}

// grafanaVars are the dashboard's variables, replaced by values PromQL
// accepts so promtool can parse the queries.
var grafanaVars = strings.NewReplacer(
	"$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h",
	"${instance}", ".*", "$instance", ".*", "${interface}", ".*", "$interface", ".*",
)

// TestDashboardQueriesParse: promtool parses every dashboard query (as the
// expression of a recording rule) once Grafana's variables are filled in.
func TestDashboardQueriesParse(t *testing.T) {
	bin := promtool(t)
	qs := dashboardQueries(t)
	type rule struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var rules []rule
	for i, q := range qs {
		e := grafanaVars.Replace(q.expr)
		if strings.Contains(e, "$") {
			t.Errorf("%s: a Grafana variable the test does not know in %q", q.where, q.expr)
			continue
		}
		rules = append(rules, rule{Record: fmt.Sprintf("dashboard:query%d", i), Expr: e})
	}
	doc := map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}}
	b, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "dashboard-rules.yml")
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "check", "rules", file).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules on the dashboard's %d queries: %v\n%s", len(rules), err, out)
	}
	if !strings.Contains(string(out), fmt.Sprintf("SUCCESS: %d rules found", len(rules))) {
		t.Fatalf("promtool did not check %d queries:\n%s", len(rules), out)
	}
}

// TestREADMEDocumentsEveryAlert: the README's alert table names every
// alert with its expression and its for, as the rules file has them.
func TestREADMEDocumentsEveryAlert(t *testing.T) {
	var rules struct {
		Groups []struct {
			Rules []struct {
				Alert string `yaml:"alert"`
				Expr  string `yaml:"expr"`
				For   string `yaml:"for"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	readYAML(t, rulesFile, &rules)
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				continue
			}
			n++
			forText := r.For
			if forText == "" {
				forText = "0"
			}
			row := fmt.Sprintf("| `%s` | `%s` | %s |", r.Alert, strings.ReplaceAll(r.Expr, "|", `\|`), forText)
			if !strings.Contains(string(readme), row) {
				t.Errorf("README.md has no row starting %s", row)
			}
		}
	}
	if n == 0 {
		t.Fatal("no alerts")
	}
}
