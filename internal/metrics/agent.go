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
	attackActive    *prometheus.GaugeVec
	attacks         *prometheus.CounterVec
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
		attackActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: AttackActive,
			Help: "1 while the agent reports an attack on the interface (from its \"attack started\" to its \"attack ended\" log line: " +
				"drops at or above attacks.threshold_pps for attacks.min_duration, until below it for attacks.quiet_period), else 0. " +
				"Absent for an interface that has had no attack since the agent started."}, []string{"interface"}),
		attacks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: AttacksTotal,
			Help: "Attacks the agent reported on the interface since it started (\"attack started\" log lines)."}, []string{"interface"}),
		now: time.Now,
	}
}

// AttackStarted records the start of an attack on iface.
func (s *AgentState) AttackStarted(iface string) {
	s.attackActive.WithLabelValues(iface).Set(1)
	s.attacks.WithLabelValues(iface).Inc()
}

// AttackEnded records the end of an attack on iface.
func (s *AgentState) AttackEnded(iface string) {
	s.attackActive.WithLabelValues(iface).Set(0)
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
	return []prometheus.Collector{s.reconciles, s.reconcileErrors, s.configValid, s.lastReloadOK, s.wanted, s.protected, s.attackActive, s.attacks}
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
