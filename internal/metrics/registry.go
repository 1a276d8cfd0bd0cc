package metrics

import (
	"fmt"
	"io"
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/common/expfmt"
)

// NewRegistry is the agent's /metrics: the kernel state read from src at
// each scrape, the agent's own state, build info, and the Go runtime's
// (go_*) and the process's (process_*) standard series.
func NewRegistry(src Source, agent *AgentState, version string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(src), agent, buildInfo(version),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// NewTextfileRegistry is `xdpguard stats --prometheus`, written for
// node_exporter's textfile collector: the kernel state and build info. It
// leaves out the agent's series (no agent wrote the file) and go_* and
// process_* (they would describe a process that has exited, and clash with
// node_exporter's own).
func NewTextfileRegistry(src Source, version string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(src), buildInfo(version))
	return reg
}

func buildInfo(version string) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        BuildInfo,
		Help:        "1, labelled with the xdpguard version and the Go version it was built with.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version()},
	}, func() float64 { return 1 })
}

// WriteText gathers g once and writes it in Prometheus' text exposition
// format. Nothing is written when gathering fails, so a textfile is never
// left holding part of the state.
func WriteText(w io.Writer, g prometheus.Gatherer) error {
	mfs, err := g.Gather()
	if err != nil {
		return fmt.Errorf("gather metrics: %w", err)
	}
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(w, mf); err != nil {
			return fmt.Errorf("write metrics: %w", err)
		}
	}
	return nil
}
