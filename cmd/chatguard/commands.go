package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/chatguard/chatguard/internal/buildinfo"
	"github.com/chatguard/chatguard/internal/config"
	"github.com/chatguard/chatguard/internal/logging"
	"github.com/chatguard/chatguard/sessions"
)

// loadConfig loads the configuration from flags, environment and file;
// on failure it prints every problem and returns the exit code to use.
func loadConfig(env environment) (*config.Config, int) {
	cfg, err := config.Load(config.Source{Args: env.args, LookupEnv: env.lookupEnv, Environ: env.environ, Output: env.stderr, Commands: commandNames})
	if errors.Is(err, flag.ErrHelp) {
		return nil, 0
	}
	var probs config.Problems
	if errors.As(err, &probs) {
		fmt.Fprintf(env.stderr, "chatguard: invalid configuration (%d problem(s)):\n", probs.Total())
		for _, p := range probs {
			fmt.Fprintf(env.stderr, "  - %s\n", p)
		}
		return nil, 2
	}
	if err != nil {
		fmt.Fprintf(env.stderr, "chatguard: %v\n", err)
		return nil, 2
	}
	return cfg, 0
}

// checkConfig validates the configuration and prints the effective values.
func checkConfig(env environment) int {
	cfg, code := loadConfig(env)
	if cfg == nil {
		return code
	}
	source := "built-in defaults"
	if cfg.File != "" {
		source = cfg.File
	}
	fmt.Fprintf(env.stdout, "configuration is valid (file: %s)\n", source)
	for _, w := range append(slices.Clone(cfg.UnknownEnv), config.Warnings(cfg)...) {
		fmt.Fprintf(env.stdout, "warning: %s\n", w)
	}
	for _, err := range startProblems(cfg) {
		// A warning, exit 0: check-config also runs away from the pod (CI,
		// a laptop), where the manifest's LOG_DIR need not exist or be
		// this user's; what the configuration says is still valid.
		fmt.Fprintf(env.stdout, "warning: serve cannot start here: %v\n", err)
	}
	for _, o := range cfg.Overridden {
		// The runbook's "check-config new.yaml" must show that an edit of
		// the file changes nothing while the environment sets the key.
		fmt.Fprintf(env.stdout, "warning: the file's %s is not used: the environment or a flag sets it\n", o)
	}
	for _, s := range config.Settings() {
		fmt.Fprintf(env.stdout, "  %-32s %s\n", s.Key, s.Value(cfg))
	}
	for _, s := range config.FileOnly(cfg) {
		fmt.Fprintf(env.stdout, "  %-32s %s\n", s.Key, s.Value)
	}
	for _, r := range cfg.Routes {
		methods := "ANY"
		if len(r.Methods) > 0 {
			ms := r.Methods
			if slices.Contains(ms, "GET") && !slices.Contains(ms, "HEAD") {
				ms = append(slices.Clone(ms), "HEAD") // the route takes HEAD with GET (QA: printed GET only)
			}
			methods = strings.Join(ms, ",")
		}
		fmt.Fprintf(env.stdout, "  route %-26s %s %s auth=%s limit=%s\n", r.Name, methods, r.Path, authMode(r.Auth), limitSummary(r.Limit, cfg.Limits))
	}
	for _, e := range cfg.WebSocket.Events {
		l := e.Limit
		if len(l.Key) == 0 {
			l.Key = []string{"user"} // as the relay keys it
		}
		fmt.Fprintf(env.stdout, "  event %-26s limit=%s\n", e.Name, limitSummary(&l, cfg.Limits))
	}
	return 0
}

// startProblems are what serve would stop at here, at start, that the
// configuration alone does not tell: the log files and the alert file it
// opens (checked as serve opens them, creating nothing).
func startProblems(cfg *config.Config) []error {
	var errs []error
	if cfg.Log.File {
		if err := logging.CheckFiles(cfg.Log.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	if cfg.Alerts.File {
		if err := sessions.CheckAlertFile(cfg.Alerts.Path); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

func authMode(a string) string {
	if a == "" {
		return "none"
	}
	return a
}

// limitSummary is a route's limit in one word: "3/15m0s key=[ip body:email]",
// or "none", so that a route left unlimited stands out.
func limitSummary(l *config.RouteLimit, global config.Limits) string {
	if l == nil {
		return "none"
	}
	// Go's %v of a list and a map ("key=[ip body:email] roles=map[admin:9]")
	// read as Go, not as the file (QA).
	s := fmt.Sprintf("%d/%s key=%s", l.Rate, l.Period, strings.Join(l.Key, "+"))
	if l.Burst > 0 {
		s += fmt.Sprintf(" burst=%d", l.Burst)
	}
	if len(l.Roles) > 0 {
		roles := make([]string, 0, len(l.Roles))
		for _, role := range slices.Sorted(maps.Keys(l.Roles)) {
			roles = append(roles, fmt.Sprintf("%s=%d", role, l.Roles[role]))
		}
		s += " " + strings.Join(roles, " ")
	}
	if m := global.Multiplier; m != 1 {
		rate, period, burst := config.ScaleLimit(l.Rate, l.Period, l.Burst, m)
		s += fmt.Sprintf(" ×%g (rate_limit.multiplier) = %d/%s", m, rate, period)
		if burst > 0 {
			s += fmt.Sprintf(" burst=%d", burst)
		}
		for _, role := range slices.Sorted(maps.Keys(l.Roles)) {
			r, p, _ := config.ScaleLimit(l.Roles[role], l.Period, l.Burst, m)
			s += fmt.Sprintf(" %s=%d/%s", role, r, p)
		}
	}
	if l.Shadow || global.Shadow {
		s += " shadow"
	}
	return s
}

func version(env environment) int {
	if len(env.args) > 0 {
		fmt.Fprintf(env.stderr, "chatguard version: takes no arguments (got %q)\n", env.args)
		return 2
	}
	b, _ := json.Marshal(buildinfo.Get())
	fmt.Fprintln(env.stdout, string(b))
	return 0
}
