package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// AgentState is what the agent reports about itself: reconcile runs, the
// config file's validity and the interfaces it wants and protects. The agent
// calls its methods as things happen (ConfigLoaded and Reconciled match the
// agent's Observer); it is a prometheus.Collector, safe for concurrent use.
type AgentState struct {
	reconciles      prometheus.Counter
	reconcileErrors prometheus.Counter
	configValid     prometheus.Gauge
	lastReloadOK    prometheus.Gauge
	wanted          prometheus.Gauge
	protected       prometheus.Gauge
	now             func() time.Time
}

// NewAgentState returns the agent's metrics, all at 0.
func NewAgentState() *AgentState {
	return &AgentState{
		reconciles: prometheus.NewCounter(prometheus.CounterOpts{Name: ReconcileTotal,
			Help: "Reconcile runs the agent finished, successful or not: each makes the kernel match the config " +
				"(at start, on SIGHUP, on a change of the config or an allow-list file, on a link event)."}),
		reconcileErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: ReconcileErrors,
			Help: "Reconcile runs that failed; the state before the run stayed in force."}),
		configValid: prometheus.NewGauge(prometheus.GaugeOpts{Name: ConfigValid,
			Help: "1 if the last load of the config file (and the allow-list files it names) succeeded, 0 if it was rejected; " +
				"a rejected config changes nothing in the kernel."}),
		lastReloadOK: prometheus.NewGauge(prometheus.GaugeOpts{Name: ConfigReloadOK,
			Help: "Unix time of the last successful load of the config file; 0 before the first."}),
		wanted: prometheus.NewGauge(prometheus.GaugeOpts{Name: IfacesWanted,
			Help: "Interfaces that exist and match the config's include and exclude globs: the ones the agent must protect."}),
		protected: prometheus.NewGauge(prometheus.GaugeOpts{Name: IfacesProtected,
			Help: "Wanted interfaces the last reconcile left with xdpguard attached as configured; " +
				"below xdpguard_interfaces_wanted means some are unprotected."}),
		now: time.Now,
	}
}

// Reconciled counts one finished reconcile run; err is its outcome. The
// trigger (start, SIGHUP, a file, a link event) is not a label: it is the
// agent's free text, for its log, and labels must stay bounded.
func (s *AgentState) Reconciled(trigger string, err error) {
	s.reconciles.Inc()
	if err != nil {
		s.reconcileErrors.Inc()
	}
}

// ConfigLoaded records a load of the config file: err nil means it was
// valid and taken.
func (s *AgentState) ConfigLoaded(err error) {
	if err != nil {
		s.configValid.Set(0)
		return
	}
	s.configValid.Set(1)
	s.lastReloadOK.Set(float64(s.now().UnixNano()) / 1e9)
}

// SetInterfaces records how many interfaces the config wants protected and
// how many are.
func (s *AgentState) SetInterfaces(wanted, protected int) {
	s.wanted.Set(float64(wanted))
	s.protected.Set(float64(protected))
}

func (s *AgentState) collectors() []prometheus.Collector {
	return []prometheus.Collector{s.reconciles, s.reconcileErrors, s.configValid, s.lastReloadOK, s.wanted, s.protected}
}

// Describe sends the descriptions of the agent's series.
func (s *AgentState) Describe(ch chan<- *prometheus.Desc) {
	for _, c := range s.collectors() {
		c.Describe(ch)
	}
}

// Collect sends the agent's series.
func (s *AgentState) Collect(ch chan<- prometheus.Metric) {
	for _, c := range s.collectors() {
		c.Collect(ch)
	}
}
