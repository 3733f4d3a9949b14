package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/chatguard/chatguard/internal/buildinfo"
	"github.com/chatguard/chatguard/internal/config"
	"github.com/chatguard/chatguard/internal/identity"
	"github.com/chatguard/chatguard/internal/logging"
	"github.com/chatguard/chatguard/internal/memstats"
	"github.com/chatguard/chatguard/internal/metrics"
	"github.com/chatguard/chatguard/internal/redisurl"
	"github.com/chatguard/chatguard/limiter"
	"github.com/chatguard/chatguard/proxy"
	"github.com/chatguard/chatguard/sessions"
)

// serve runs the proxy until SIGTERM or SIGINT, then drains and exits 0.
// A second signal exits at once with status 1. SIGUSR2 returns free memory
// to the OS and logs the heap before and after.
func serve(ctx context.Context, env environment) int {
	cfg, code := loadConfig(env)
	if cfg == nil {
		return code
	}
	info := buildinfo.Get()
	reg := metrics.NewRegistry(info)
	memLimit := deriveMemoryLimit(env.lookupEnv)
	logger, err := logging.New(logging.Options{
		Level:           cfg.Log.Level,
		Development:     cfg.Development(),
		Out:             env.stdout,
		File:            cfg.Log.File,
		Dir:             cfg.Log.Dir,
		MaxSizeMB:       cfg.Log.MaxSizeMB,
		MaxBackups:      cfg.Log.MaxBackups,
		SummaryInterval: cfg.Log.SummaryInterval,
		FlushInterval:   cfg.Log.FlushInterval,
		Registerer:      reg,
	})
	if err != nil {
		fmt.Fprintf(env.stderr, "chatguard: %v\n", err)
		return 1
	}
	defer logger.Close()
	log := logger.WithField(logging.FieldCategory, logging.CategorySystem)
	log.WithFields(logrus.Fields{"version": info.Version, "revision": info.Revision, "env": cfg.Env, "goMemLimit": memLimit}).Info("chatguard starting")
	if cfg.Memory.Limit == 0 && sessions.DetectMemoryLimit() <= 0 { // GOMEMLIMIT=off counts as none (review)
		log.Warn("no memory limit is known (memory.limit, GOMEMLIMIT or a container's cgroup limit): the heap is not watched, chatguard_memory_pressure_ratio{resource=\"heap\"} stays 0 and no heap alert can fire")
	}
	warnOverridden(log, cfg)
	for _, w := range cfg.UnknownEnv {
		log.Warn(w)
	}
	for _, w := range config.Warnings(cfg) {
		logger.WithField(logging.FieldCategory, logging.CategorySecurity).Warn(w)
	}

	a, err := newApp(cfg, logger, reg)
	if err != nil {
		log.WithError(err).Error("cannot start")
		return 1
	}
	defer a.Close() // after the proxy has drained: table entries leave with reason shutdown
	public, admin, err := listen(cfg)
	if err != nil {
		log.WithError(err).Error("cannot listen")
		return 1
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	reload := func(why string) { reloadConfig(env, a, log, why) }
	forcedExit := func(code int) {
		a.saveBeforeExit(log, time.Second)
		_ = logger.Flush()
		env.exit(code)
	}
	stopSignals := handleSignals(cancel, log, forcedExit, reload)
	// The signals stay ours until the state is saved and the log written:
	// released earlier, a second SIGTERM in the last moments would kill the
	// process by default (status 143), losing the rate-limit file's last
	// save and the final log lines.
	defer func() {
		a.Close()
		_ = logger.Flush()
		stopSignals()
	}()
	fileGone := func(path string) func() {
		return func() {
			log.WithFields(logrus.Fields{logging.FieldCategory: logging.CategorySystem, "file": path}).
				Warn("a watched file is gone; the configuration in force stays until it is back")
		}
	}
	stopWatch := watchFile(ctx, cfg.File, time.Second, func() { reload(reasonFileChanged) }, fileGone(cfg.File))
	defer stopWatch()
	// A key rotated in its Secret (a mounted file) is a reload too.
	stopKeyWatch := watchFile(ctx, cfg.Auth.JWTPublicKeyFile, time.Second, func() { reload("the JWT public key file changed") }, fileGone(cfg.Auth.JWTPublicKeyFile))
	defer stopKeyWatch()

	if err := a.srv.Serve(ctx, public, admin); err != nil {
		log.WithError(err).Error("chatguard failed")
		return 1
	}
	return 0
}

// app is everything serve runs, wired together.
type app struct {
	closeOnce sync.Once
	srv       *proxy.Server
	tables    *sessions.Manager
	watchdog  *sessions.Watchdog
	closers   []func() error
	persister *limiter.Persister // the rate-limit file, if any
	reloadMu  sync.Mutex
	reloads   *reloadMetrics
	file      string // the --config file, if any
	// lastFile is the sum of the config file the last reload read,
	// lastApplied whether that reload applied, and lastAsked whether it was
	// asked for (a SIGHUP) rather than the watcher's (all under reloadMu):
	// the watcher seeing an edit a SIGHUP already reloaded — applied or
	// refused — need not reload it again.
	lastFile    [sha256.Size]byte
	lastApplied bool
	lastAsked   bool
	// sockets receives connectedUsers evictions; set once the registry
	// exists, before any socket does.
	sockets atomic.Pointer[sessions.Registry]
}

// saveBeforeExit writes the rate-limit file on a forced exit (a second
// signal), waiting at most limit: the periodic save may be up to
// rate_limit.save_interval old, and with it the login attempts a client
// used. The file is replaced atomically, so an exit mid-write leaves the
// last one whole.
func (a *app) saveBeforeExit(log *logrus.Entry, limit time.Duration) {
	if a.persister == nil {
		return
	}
	saved := make(chan error, 1)
	go func() { saved <- a.persister.Save() }()
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case err := <-saved:
		if err != nil {
			log.WithError(err).Warn("cannot save the rate-limit file before exiting")
			return
		}
		log.Info("saved the rate-limit file before exiting")
	case <-t.C:
		log.WithField("waited", limit.String()).Warn("the rate-limit file was not saved in time before exiting")
	}
}

// newApp builds the proxy, the table manager and the watchdog, registering
// their metrics on reg.
func newApp(cfg *config.Config, logger *logging.Logger, reg *prometheus.Registry) (*app, error) {
	a := &app{file: cfg.File}
	var err error
	if a.reloads, err = newReloadMetrics(reg, time.Now()); err != nil {
		return nil, err
	}
	tables, std, watchdog, err := startMemoryManagement(cfg, logger, reg, func(user string, c sessions.ConnectedUser, r sessions.Reason) {
		if sockets := a.sockets.Load(); sockets != nil {
			sockets.OnEvicted(user, c, r)
		}
	})
	if err != nil {
		return nil, fmt.Errorf("memory management: %w", err)
	}
	a.tables, a.watchdog = tables, watchdog
	sockets := sessions.NewRegistry(sessions.RegistryOptions{
		Tables: std, MaxPerUser: cfg.WebSocket.MaxSocketsPerUser, MaxPerIP: cfg.WebSocket.MaxSocketsPerIP,
	})
	a.sockets.Store(sockets)
	verifier, err := newVerifier(cfg.Auth)
	if err != nil {
		a.Close()
		return nil, err
	}
	// The rate-limit file is loaded before the store starts: a store's
	// first decision (the failover's probe of a quiet Redis comes within a
	// quarter of a second) in the table made a load that took longer
	// fail, and the file was set aside (review: 1 M entries, 2.7 s).
	persistence := "off"
	var persister *limiter.Persister
	if cfg.Limits.File != "" {
		if persister, err = limiter.NewPersister(limiter.PersistOptions{
			Table: std.EventRateLimits, Path: cfg.Limits.File, Every: cfg.Limits.SaveInterval,
			Logger: logger.WithField(logging.FieldCategory, logging.CategorySecurity), Registerer: reg,
		}); err != nil {
			a.Close()
			return nil, err
		}
		a.persister = persister
	}
	store, mode, err := newStore(cfg, tables, std, logger, reg, a)
	if persister != nil {
		// Saved last, once the store's own closers have run.
		a.closers = append(a.closers, persister.Close)
	}
	if err != nil {
		a.Close()
		return nil, err
	}
	lim, err := limiter.New(limiter.Options{Store: store, Mode: mode, Registerer: reg})
	if err != nil {
		a.Close()
		return nil, err
	}
	security := logger.WithField(logging.FieldCategory, logging.CategorySecurity)
	abuse, err := limiter.NewAbuse(limiter.AbuseOptions{
		Table: std.EventRateLimits, Warning: cfg.Limits.AbuseWarning, Critical: cfg.Limits.AbuseCritical,
		BlockFor: cfg.Limits.BlockFor, Registerer: reg,
		OnAlert: func(group netip.Prefix, n int64, severity, requestID string) {
			ip := limiter.GroupString(group)
			threshold := cfg.Limits.AbuseWarning
			if severity == "CRITICAL" {
				threshold = cfg.Limits.AbuseCritical
			}
			alert := sessions.Alert{
				// Type as the watchdog names its types: severity_kind.
				Time: time.Now(), Type: severity + "_RATE_LIMIT_ABUSE", Resource: "rejections_per_hour", Current: n, Threshold: int64(threshold),
				Ratio: fmt.Sprintf("%.2f", float64(n)/float64(max(threshold, 1))), Severity: severity,
				RequiresAttention: severity == "CRITICAL", IP: ip,
			}
			if watchdog != nil {
				watchdog.Record(alert)
			}
			// The log line carries the alert object as the memory alerts'
			// lines do (the seed's alert format): a pipeline keyed on
			// alert.type missed these (QA).
			e := security.WithFields(logrus.Fields{"alert": alert, "ip": ip, "rejectionsLastHour": n, "severity": severity,
				"requiresAttention": severity == "CRITICAL", "requestId": requestID})
			if severity == "CRITICAL" {
				// The block refuses new requests; the IP's open sockets go too.
				e = e.WithField("socketsDisconnected", sockets.KickAddr(group, "ip_blocked"))
				e.WithField("blockedFor", cfg.Limits.BlockFor.String()).Error("CRITICAL ALERT: RATE_LIMIT_ABUSE; IP blocked")
			} else {
				e.Warn("warning alert: RATE_LIMIT_ABUSE")
			}
		},
	})
	if err != nil {
		a.Close()
		return nil, err
	}
	a.srv, err = proxy.New(proxy.Options{
		Config: cfg, Logger: logger.Logger, Registry: reg,
		Limiter: lim, Verifier: verifier, UserRoles: std.UserRoles, Abuse: abuse, Sockets: sockets,
	})
	if err != nil {
		a.Close()
		return nil, fmt.Errorf("proxy: %w", err)
	}
	a.srv.AddStats("memoryManager", func() any { return tables.StatsBlock() })
	a.srv.AddStats("rateLimiting", func() any {
		b := lim.StatsBlock()
		b["persistence"] = persistence
		b["replicas"] = cfg.Redis.Replicas // a restart's setting: this cfg stays right
		if persister != nil {
			b["persistence"] = map[bool]string{true: "ok", false: "failing"}[persister.Healthy()]
		}
		return b
	})
	// What this instance enforces, in one line at start: the first thing to
	// read when limits or auth behave unexpectedly (never a secret or URL).
	// (Field names avoid the words the redaction hook filters: auth, token.)
	storeMode := limiter.ModeMemoryOnly
	if mode != nil {
		storeMode = mode()
	}
	fields := logrus.Fields{
		logging.FieldCategory: logging.CategorySystem, "routes": len(cfg.Routes), "rateLimitStore": storeMode,
		"rateLimitFile": cfg.Limits.File, "usersVerified": verifier != nil, "socketIdentity": cfg.WebSocket.Auth,
		"shadowRoutes": shadowRoutes(cfg),
		// What must agree across replicas sharing a Redis (QA: a prefix or
		// a replica count that differed on one pod showed nowhere).
		"multiplier": cfg.Limits.Multiplier, "replicas": cfg.Redis.Replicas, "redisPrefix": cfg.Redis.Prefix,
	}
	if target := redisTarget(cfg.Redis.URL.Reveal()); target != "" {
		fields["redis"] = target
	}
	logger.WithFields(fields).Info("enforcing")
	return a, nil
}

// shadowRoutes names the limited routes that only count (rate_limit.shadow
// puts them all in shadow mode): what the start-up line says is not enforced.
func shadowRoutes(cfg *config.Config) []string {
	names := []string{}
	for _, r := range cfg.Routes {
		if r.Limit != nil && (cfg.Limits.Shadow || r.Limit.Shadow) {
			names = append(names, r.Name)
		}
	}
	return names
}

// newStore is the rate-limit store: the memory table, or Redis with the
// memory table as its fallback. The Redis client is closed with a.
func newStore(cfg *config.Config, tables *sessions.Manager, std *sessions.Standard, logger *logging.Logger, reg prometheus.Registerer, a *app) (limiter.Store, func() string, error) {
	mem := limiter.NewMemoryStore(std.EventRateLimits)
	url := cfg.Redis.URL.Reveal()
	if url == "" {
		return mem, nil, nil
	}
	// go-redis logs some failures itself (a pool that cannot dial), by
	// default as plain text on stderr, which would break the JSON stream.
	limiter.SetRedisLogger(logger.WithField(logging.FieldCategory, logging.CategoryDatabase), url)
	client, err := limiter.NewRedisClient(url, cfg.Redis.Timeout)
	if err != nil {
		return nil, nil, err
	}
	rs := limiter.NewRedisStore(client, cfg.Redis.Prefix, cfg.Redis.Timeout)
	watchAt := len(a.closers)                             // the failover's watcher stops before the store
	a.closers = append(a.closers, rs.Close, client.Close) // the store's flushers first
	dbLog := logger.WithField(logging.FieldCategory, logging.CategoryDatabase)
	rs.WatchNodes(cfg.Redis.Failures, cfg.Redis.Cooldown, func(addr string, down bool) {
		if down {
			dbLog.WithField("node", addr).Warn("redis cluster node does not answer; its keys are decided in memory")
			return
		}
		dbLog.WithField("node", addr).Info("redis cluster node answers again (or its slots moved)")
	})
	if err := reg.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "chatguard_ratelimit_redis_nodes_down",
		Help: "Redis Cluster masters held open by their breaker: their keys are decided in memory (0 on a single node).",
	}, func() float64 { return float64(len(rs.NodesDown())) })); err != nil {
		return nil, nil, err
	}
	debts, err := sessions.NewManagedStateTable(tables, sessions.TableRateLimitDebts, sessions.StateOptions{MaxEntries: limiter.MaxDebts})
	if err != nil {
		return nil, nil, err
	}
	log := logger.WithField(logging.FieldCategory, logging.CategorySecurity)
	f, err := limiter.NewFailoverStore(limiter.FailoverOptions{
		Primary:  rs,
		Fallback: mem,
		Debts:    debts,
		Failures: cfg.Redis.Failures,
		Cooldown: cfg.Redis.Cooldown,
		Replicas: cfg.Redis.Replicas,
		OnModeChange: func(from, to string, err error) {
			e := log.WithFields(logrus.Fields{"from": from, "to": to})
			if err != nil {
				e = e.WithError(err)
			}
			e.Warn("rate-limit store switched")
		},
		OnStillFailing: func(err error) {
			log.WithError(err).Warn("rate-limit store still failing; decisions stay in memory")
		},
		OnFailure: func(err error) {
			log.WithError(err).Warn("rate-limit store call failed; Redis is still used (a failed call's requests are decided in memory)")
		},
		Registerer: reg,
	})
	if err != nil {
		return nil, nil, err
	}
	// A Redis that does not answer at start: fallback from the first
	// request, said in the log, rather than three requests waiting for
	// the deadline and a mode that says redis until then.
	if err := rs.Ping(context.Background()); err != nil {
		f.Trip(fmt.Errorf("limiter: redis does not answer at start: %w", err))
	}
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		f.Watch(stop)
	}()
	a.closers = slices.Insert(a.closers, watchAt, func() error {
		close(stop)
		<-stopped
		return nil
	})
	return f, f.Mode, nil
}

// newVerifier builds the JWT verifier, or nil when no key is configured.
func newVerifier(c config.Auth) (*identity.Verifier, error) {
	if !c.Configured() {
		return nil, nil
	}
	o := identity.Options{
		Secret: []byte(c.JWTSecret.Reveal()), Issuer: c.Issuer, Audience: c.Audience,
		RequireExpiry: c.RequireExpiry, UserClaims: c.UserClaims, RoleClaim: c.RoleClaim, NameClaim: c.NameClaim,
		RoleMap: c.RoleMap,
	}
	if c.JWTPublicKeyFile != "" {
		pem, err := os.ReadFile(c.JWTPublicKeyFile)
		if err != nil {
			return nil, fmt.Errorf("auth.jwt_public_key_file: %w", err)
		}
		o.PublicKeyPEM = pem
	}
	return identity.New(o)
}

// Close stops the watchdog, then closes the tables.
func (a *app) Close() {
	a.closeOnce.Do(func() {
		if a.watchdog != nil {
			a.watchdog.Close()
		}
		for _, c := range a.closers {
			_ = c()
		}
		a.tables.Close()
	})
}

// startMemoryManagement makes the table manager with the seed's tables and
// the memory watchdog.
func startMemoryManagement(cfg *config.Config, logger *logging.Logger, reg *prometheus.Registry,
	onUserEvicted func(string, sessions.ConnectedUser, sessions.Reason)) (*sessions.Manager, *sessions.Standard, *sessions.Watchdog, error) {
	perf := logger.WithField(logging.FieldCategory, logging.CategoryPerformance)
	m := sessions.NewManager(sessions.ManagerOptions{SweepInterval: cfg.Memory.SweepInterval, Logger: perf})
	std, err := sessions.NewStandard(m, cfg.Tables, sessions.StandardOptions{OnConnectedUserEvicted: onUserEvicted, EventVolatile: limiter.Volatile})
	if err != nil {
		m.Close()
		return nil, nil, nil, err
	}
	if err := reg.Register(m.Collector()); err != nil {
		m.Close()
		return nil, nil, nil, err
	}
	alertFile := ""
	if cfg.Alerts.File {
		alertFile = cfg.Alerts.Path
	}
	mem := cfg.Memory
	w, err := sessions.NewWatchdog(sessions.WatchdogOptions{
		Manager: m,
		Thresholds: sessions.Thresholds{
			TableWarning: mem.WarningThreshold, TableCritical: mem.CriticalThreshold,
			HeapWarning: mem.HeapWarningRatio, HeapCritical: mem.HeapCriticalRatio,
			UsersWarning: mem.ConnectedUsersWarning, UsersCritical: mem.ConnectedUsersCritical,
		},
		Interval:     mem.CheckInterval,
		MemoryLimit:  mem.Limit,
		ShedFraction: mem.ShedFraction,
		Cooldown:     mem.EmergencyCooldown,
		ProfileDir:   mem.ProfileDir,
		MaxProfiles:  mem.MaxProfiles,
		CPUProfile:   mem.CPUProfile,
		AlertFile:    alertFile,
		Logger:       perf,
		Registerer:   reg,
	})
	if err != nil {
		m.Close()
		return nil, nil, nil, err
	}
	return m, std, w, nil
}

// deriveMemoryLimit gives the Go runtime a soft memory limit of 90 % of the
// container's cgroup limit when GOMEMLIMIT is not set, so that the garbage
// collector works harder before the kernel's OOM killer does. It returns the
// limit in force (0 = none).
func deriveMemoryLimit(lookupEnv func(string) (string, bool)) int64 {
	if _, set := lookupEnv("GOMEMLIMIT"); set {
		return debug.SetMemoryLimit(-1)
	}
	if l := sessions.DetectMemoryLimit(); l > 0 {
		debug.SetMemoryLimit(l / 10 * 9)
		return l / 10 * 9
	}
	return 0
}

func listen(cfg *config.Config) (public, admin net.Listener, err error) {
	public, err = net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, nil, fmt.Errorf("listen %s: %w", cfg.Listen, err)
	}
	admin, err = net.Listen("tcp", cfg.AdminListen)
	if err != nil {
		public.Close()
		return nil, nil, fmt.Errorf("admin listen %s: %w", cfg.AdminListen, err)
	}
	return public, admin, nil
}

// warnOverridden says which of the file's settings the environment or a
// flag replaces: editing them in the file (the runbook's multiplier, a
// ConfigMap) changes nothing, at start or on a reload.
func warnOverridden(log *logrus.Entry, cfg *config.Config) {
	if len(cfg.Overridden) > 0 {
		log.WithField("overridden", cfg.Overridden).Warn("configuration file settings not used: the environment or a flag sets them")
	}
}

// reasonFileChanged is the reload reason of the config file's watcher.
const reasonFileChanged = "the config file changed"

// reloadConfig loads the configuration again (same flags, environment and
// file) and hands its routes to the proxy. A configuration with problems is
// refused: each problem is logged and the running one stays.
func reloadConfig(env environment, a *app, log *logrus.Entry, why string) {
	a.reloadMu.Lock() // SIGHUP and the file watcher: one reload at a time, in order
	defer a.reloadMu.Unlock()
	log = log.WithField("reason", why)
	var data []byte
	var readErr error
	if a.file != "" {
		data, readErr = config.ReadFile(a.file)
		sum := sha256.Sum256(data)
		if why == reasonFileChanged && readErr == nil && sum == a.lastFile && (a.lastApplied || a.lastAsked) {
			// A SIGHUP already reloaded this very file (its edit both
			// signalled and seen by the watcher): one reload, not two, and
			// a refused file one failure, not two (QA soak). A file refused
			// by the watcher itself is reloaded when it changes again.
			log.Debug("configuration file unchanged since the last reload")
			return
		}
		a.lastFile = sum
	}
	a.lastAsked = why != reasonFileChanged
	applied := false
	defer func() {
		a.lastApplied = applied
		a.reloads.record(applied, time.Now())
	}()
	src := config.Source{Args: env.args, LookupEnv: env.lookupEnv, Environ: env.environ}
	if a.file != "" {
		// An empty file at start means the defaults; during a reload it is a
		// rewrite caught half-way (truncated, or holding only the comment an
		// editor wrote first) or a mistake, and the defaults would drop every
		// route's auth and limits at once. Whitespace and comments are as
		// empty as zero bytes.
		if readErr == nil && config.IsBlank(data) {
			log.WithField("problem", a.file+" is empty (no settings, only whitespace or comments)").Error("configuration reload refused")
			return
		}
		if readErr == nil {
			// Load decodes the bytes checked here, not a later version of
			// the file that nobody checked.
			src.ReadFile = func(name string) ([]byte, error) {
				if name == a.file {
					return data, nil
				}
				return os.ReadFile(name)
			}
		}
	}
	cfg, err := config.Load(src)
	if err != nil {
		var probs config.Problems
		if errors.As(err, &probs) {
			for _, p := range probs {
				log.WithField("problem", p).Error("configuration reload refused")
			}
		} else {
			log.WithError(err).Error("configuration reload refused")
		}
		return
	}
	// The token checks are built again, the key file read again: a
	// rotated key (or secret) applies with the reload (QA: the old key
	// kept working after a reload that said it succeeded).
	verifier, err := newVerifier(cfg.Auth)
	if err != nil {
		log.WithField("problem", err.Error()).Error("configuration reload refused")
		return
	}
	ignored, err := a.srv.Reload(cfg, verifier)
	if err != nil {
		log.WithField("problem", err.Error()).Error("configuration reload refused")
		return
	}
	applied = true
	warnOverridden(log, cfg)
	// What a reload can change: a new route behind another, an event
	// limit that never applies (the rest was said at start).
	for _, w := range config.RouteWarnings(cfg) {
		log.WithField(logging.FieldCategory, logging.CategorySecurity).Warn(w)
	}
	e := log.WithFields(logrus.Fields{"routes": len(cfg.Routes), "multiplier": cfg.Limits.Multiplier, "shadowRoutes": shadowRoutes(cfg)})
	if len(ignored) > 0 {
		// Said loudly: an operator tightening token checks or abuse
		// thresholds must not believe they took effect.
		e.WithField("restartNeededFor", ignored).Warn("configuration reloaded: routes, limits, auth modes and token checks; the other changes wait for a restart")
		return
	}
	e.Info("configuration reloaded: routes, limits, auth modes and token checks")
}

// watchFile calls changed when the file's size or modification time changes
// and then stays the same for one more check, checking every interval, until
// ctx ends: a file still being written in place is read once it settles,
// not half-way (QA: a file written in two steps was applied with half its
// routes). gone is called once when the file disappears (until it is back).
// No file: nothing to watch.
func watchFile(ctx context.Context, path string, every time.Duration, changed, gone func()) (stop func()) {
	if path == "" {
		return func() {}
	}
	stat := func() os.FileInfo {
		if fi, err := os.Stat(path); err == nil {
			return fi
		}
		return nil
	}
	// same: the same file, by size, modification time and identity (a
	// file put in place by rename with the same size and time, as cp -p
	// or tar leave it, is another: review).
	same := func(a, b os.FileInfo) bool {
		return a != nil && b != nil && a.Size() == b.Size() && a.ModTime().Equal(b.ModTime()) && os.SameFile(a, b)
	}
	last := stat()
	var pending os.FileInfo // a change seen at the last check, applied if it holds
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		missing := false
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				now := stat()
				switch {
				case now == nil:
					if !missing && gone != nil {
						gone()
					}
					missing, pending = true, nil
				case same(now, last):
					missing, pending = false, nil
				case same(now, pending):
					missing, last, pending = false, now, nil
					changed()
				default:
					missing, pending = false, now
				}
			}
		}
	}()
	return func() { cancel(); <-done }
}

// duplicateSignalWindow: a repeat of the first stop signal this soon is
// taken as the same one delivered twice.
const duplicateSignalWindow = 500 * time.Millisecond

// handleSignals owns the signal goroutine; the returned func stops it.
func handleSignals(cancel context.CancelFunc, log *logrus.Entry, exit func(int), reload func(string)) (stop func()) {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR2, syscall.SIGHUP)
	done := make(chan struct{})
	finished := make(chan struct{})
	// Reloads run on their own goroutine: one that takes long (a file
	// being checked, a slow disk) must not hold back a SIGTERM behind it
	// (QA: a slow reload delayed the shutdown by 23 s). SIGHUPs that come
	// while one waits are one: it reads the file as it is then.
	reloads := make(chan struct{}, 1)
	reloaderDone := make(chan struct{})
	go func() {
		defer close(reloaderDone)
		for {
			select {
			case <-done:
				return
			case <-reloads:
				reload("SIGHUP")
			}
		}
	}()
	go func() {
		defer close(finished)
		var (
			stopping  bool
			first     os.Signal
			firstTime time.Time
		)
		for {
			select {
			case <-done:
				return
			case sig := <-sigs:
				switch {
				case sig == syscall.SIGHUP:
					select {
					case reloads <- struct{}{}:
					default: // one is waiting already
					}
				case sig == syscall.SIGUSR2:
					before, after := memstats.FreeOSMemory()
					log.WithFields(logrus.Fields{
						"category": logging.CategoryPerformance,
						"before":   before,
						"after":    after,
					}).Info("returned free memory to the OS (SIGUSR2)")
				case !stopping:
					stopping, first, firstTime = true, sig, time.Now()
					log.WithField("signal", sig.String()).Info("shutting down gracefully; send the signal again to exit at once")
					cancel()
				case sig == first && time.Since(firstTime) < duplicateSignalWindow:
					// The same signal twice at once is one request delivered
					// twice (a wrapper signalling the process and its group,
					// as timeout(1) and tini -g do), not an operator's second.
					log.WithField("signal", sig.String()).Info("the same signal again at once: taken as one; send it again to exit at once")
				default:
					log.WithField("signal", sig.String()).Warn("second signal: exiting at once")
					exit(1)
				}
			}
		}
	}()
	return func() {
		signal.Stop(sigs)
		close(done)
		<-finished
		<-reloaderDone
	}
}

// redisTarget says which Redis the limits use, without credentials ("node
// redis:6379", "cluster from 3 seed nodes", "sentinel master mymaster via 3
// sentinels"); "" without one. A Sentinel URL's hosts are not the Redis
// used, and nothing at start said which master they led to (Sentinel work).
func redisTarget(url string) string {
	if url == "" {
		return ""
	}
	o, err := redisurl.Parse(url)
	if err != nil {
		return ""
	}
	return redisurl.Describe(o)
}
