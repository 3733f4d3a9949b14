package config

import (
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/chatguard/chatguard/internal/redisurl"
)

// Setting is one scalar key that the environment or a flag can set.
type Setting struct {
	Key  string // YAML path, dotted
	Env  string // environment variable
	Flag string // command-line flag, without dashes
	Help string
	// field returns a pointer to the setting's field in c.
	field func(c *Config) any
}

// Settings lists every key that the environment and flags can set, in the
// order the README's configuration table gives them.
func Settings() []Setting { return settings }

var settings = []Setting{
	{"listen", "CHATGUARD_LISTEN", "listen", "public listener address", func(c *Config) any { return &c.Listen }},
	{"admin_listen", "CHATGUARD_ADMIN_LISTEN", "admin-listen", "admin listener address", func(c *Config) any { return &c.AdminListen }},
	{"upstream", "CHATGUARD_UPSTREAM", "upstream", "the chat backend's URL", func(c *Config) any { return &c.Upstream }},
	{"env", "CHATGUARD_ENV", "env", "production or development", func(c *Config) any { return &c.Env }},
	{"stats_token", "CHATGUARD_STATS_TOKEN", "stats-token", "bearer token for /api/internal/stats and remote /drain (16 characters or more)", func(c *Config) any { return &c.StatsToken }},
	{"proxy.trusted_proxies", "CHATGUARD_TRUSTED_PROXIES", "trusted-proxies", "CIDRs whose X-Forwarded-* headers are believed (comma-separated)", func(c *Config) any { return &c.Proxy.TrustedProxies }},
	{"proxy.dial_timeout", "CHATGUARD_DIAL_TIMEOUT", "dial-timeout", "upstream connect timeout", func(c *Config) any { return &c.Proxy.DialTimeout }},
	{"proxy.response_header_timeout", "CHATGUARD_RESPONSE_HEADER_TIMEOUT", "response-header-timeout", "wait for upstream response headers", func(c *Config) any { return &c.Proxy.ResponseHeaderTimeout }},
	{"proxy.response_body_timeout", "CHATGUARD_RESPONSE_BODY_TIMEOUT", "response-body-timeout", "longest wait for the next bytes of an upstream response body, event streams aside (0: none)", func(c *Config) any { return &c.Proxy.ResponseBodyTimeout }},
	{"proxy.idle_conn_timeout", "CHATGUARD_IDLE_CONN_TIMEOUT", "idle-conn-timeout", "idle upstream keep-alive lifetime", func(c *Config) any { return &c.Proxy.IdleConnTimeout }},
	{"proxy.max_idle_conns", "CHATGUARD_MAX_IDLE_CONNS", "max-idle-conns", "idle upstream connections kept", func(c *Config) any { return &c.Proxy.MaxIdleConns }},
	{"proxy.preserve_host", "CHATGUARD_PRESERVE_HOST", "preserve-host", "send the client's Host upstream", func(c *Config) any { return &c.Proxy.PreserveHost }},
	{"proxy.error_inspect_bytes", "CHATGUARD_ERROR_INSPECT_BYTES", "error-inspect-bytes", "bytes of an upstream error body read to classify it", func(c *Config) any { return &c.Proxy.ErrorInspectBytes }},
	{"proxy.ready_on_upstream", "CHATGUARD_READY_ON_UPSTREAM", "ready-on-upstream", "/readyz answers 503 while the upstream does not accept connections", func(c *Config) any { return &c.Proxy.ReadyOnUpstream }},
	{"proxy.cors_from_upstream", "CHATGUARD_CORS_FROM_UPSTREAM", "cors-from-upstream", "answers chatguard makes itself carry the CORS headers the upstream last sent the same Origin", func(c *Config) any { return &c.Proxy.CORSFromUpstream }},
	{"server.read_header_timeout", "CHATGUARD_READ_HEADER_TIMEOUT", "read-header-timeout", "time a client has to send its headers", func(c *Config) any { return &c.Server.ReadHeaderTimeout }},
	{"server.body_read_timeout", "CHATGUARD_BODY_READ_TIMEOUT", "body-read-timeout", "longest wait for the next bytes of a request body (0: none)", func(c *Config) any { return &c.Server.BodyReadTimeout }},
	{"server.send_timeout", "CHATGUARD_SEND_TIMEOUT", "send-timeout", "longest a write to a client may block before the response is cut (0: none)", func(c *Config) any { return &c.Server.SendTimeout }},
	{"server.idle_timeout", "CHATGUARD_IDLE_TIMEOUT", "idle-timeout", "idle client keep-alive lifetime", func(c *Config) any { return &c.Server.IdleTimeout }},
	{"server.max_header_bytes", "CHATGUARD_MAX_HEADER_BYTES", "max-header-bytes", "largest request header block (431 above)", func(c *Config) any { return &c.Server.MaxHeaderBytes }},
	{"server.max_header_count", "CHATGUARD_MAX_HEADER_COUNT", "max-header-count", "most request header fields (431 above)", func(c *Config) any { return &c.Server.MaxHeaderCount }},
	{"server.max_body_bytes", "CHATGUARD_MAX_BODY_BYTES", "max-body-bytes", "largest request body (413 above; 0 = no limit)", func(c *Config) any { return &c.Server.MaxBodyBytes }},
	{"server.drain_delay", "CHATGUARD_DRAIN_DELAY", "drain-delay", "traffic still served after turning not-ready", func(c *Config) any { return &c.Server.DrainDelay }},
	{"server.shutdown_timeout", "CHATGUARD_SHUTDOWN_TIMEOUT", "shutdown-timeout", "time in-flight requests get to finish", func(c *Config) any { return &c.Server.ShutdownTimeout }},
	{"log.level", "LOG_LEVEL", "log-level", "error, warn, info or debug", func(c *Config) any { return &c.Log.Level }},
	{"log.file", "ENABLE_FILE_LOGGING", "log-file", "also write combined.log and errors.log", func(c *Config) any { return &c.Log.File }},
	{"log.dir", "LOG_DIR", "log-dir", "directory of the log files", func(c *Config) any { return &c.Log.Dir }},
	{"log.max_size_mb", "CHATGUARD_LOG_MAX_SIZE_MB", "log-max-size-mb", "rotate a log file at this size", func(c *Config) any { return &c.Log.MaxSizeMB }},
	{"log.max_backups", "CHATGUARD_LOG_MAX_BACKUPS", "log-max-backups", "rotated files kept per log", func(c *Config) any { return &c.Log.MaxBackups }},
	{"log.summary_interval", "CHATGUARD_LOG_SUMMARY_INTERVAL", "log-summary-interval", "interval of the logging summary line (0 = off)", func(c *Config) any { return &c.Log.SummaryInterval }},
	{"log.flush_interval", "CHATGUARD_LOG_FLUSH_INTERVAL", "log-flush-interval", "stdout lines are written in batches at least this often (0 = each line at once)", func(c *Config) any { return &c.Log.FlushInterval }},
	{"auth.jwt_secret", "CHATGUARD_JWT_SECRET", "jwt-secret", "HS256 secret that verifies users' tokens (32 bytes or more)", func(c *Config) any { return &c.Auth.JWTSecret }},
	{"auth.jwt_public_key_file", "CHATGUARD_JWT_PUBLIC_KEY_FILE", "jwt-public-key-file", "PEM public key (RS256 or ES256) that verifies users' tokens", func(c *Config) any { return &c.Auth.JWTPublicKeyFile }},
	{"auth.cookie", "CHATGUARD_JWT_COOKIE", "jwt-cookie", "cookie that may carry the token (empty = none)", func(c *Config) any { return &c.Auth.Cookie }},
	{"rate_limit.multiplier", "RATE_LIMIT_MULTIPLIER", "rate-limit-multiplier", "scales every limit", func(c *Config) any { return &c.Limits.Multiplier }},
	{"rate_limit.shadow", "CHATGUARD_RATE_LIMIT_SHADOW", "rate-limit-shadow", "count what would be limited, reject nothing", func(c *Config) any { return &c.Limits.Shadow }},
	{"rate_limit.file", "CHATGUARD_RATE_LIMIT_FILE", "rate-limit-file", "where the in-memory limits are saved and reloaded (empty = not saved)", func(c *Config) any { return &c.Limits.File }},
	{"rate_limit.block_for", "CHATGUARD_BLOCK_FOR", "block-for", "how long an IP with too many rejections is blocked", func(c *Config) any { return &c.Limits.BlockFor }},
	{"redis.url", "REDIS_URL", "redis-url", "redis://, rediss://, a cluster (redis://h1:7000?addr=h2:7001) or Sentinel (redis://s1:26379?master_name=mymaster&addr=s2:26379); empty = in-memory store", func(c *Config) any { return &c.Redis.URL }},
	{"redis.timeout", "CHATGUARD_REDIS_TIMEOUT", "redis-timeout", "deadline of every Redis call", func(c *Config) any { return &c.Redis.Timeout }},
	{"redis.replicas", "CHATGUARD_REPLICAS", "replicas", "chatguard replicas sharing the limits: each enforces its share while Redis is down", func(c *Config) any { return &c.Redis.Replicas }},
	{"memory.warning_threshold", "MEMORY_WARNING_THRESHOLD", "memory-warning-threshold", "bytes of table memory that raise a warning", func(c *Config) any { return &c.Memory.WarningThreshold }},
	{"memory.critical_threshold", "MEMORY_CRITICAL_THRESHOLD", "memory-critical-threshold", "bytes of table memory that are critical (emergency cleanup)", func(c *Config) any { return &c.Memory.CriticalThreshold }},
	{"memory.heap_warning_ratio", "CHATGUARD_HEAP_WARNING_RATIO", "heap-warning-ratio", "share of the memory limit that raises a warning", func(c *Config) any { return &c.Memory.HeapWarningRatio }},
	{"memory.heap_critical_ratio", "CHATGUARD_HEAP_CRITICAL_RATIO", "heap-critical-ratio", "share of the memory limit that is critical", func(c *Config) any { return &c.Memory.HeapCriticalRatio }},
	{"memory.limit", "CHATGUARD_MEMORY_LIMIT", "memory-limit", "bytes the heap is judged against (0 = GOMEMLIMIT, else the cgroup limit)", func(c *Config) any { return &c.Memory.Limit }},
	{"memory.connected_users_warning", "CHATGUARD_CONNECTED_USERS_WARNING", "connected-users-warning", "connected users that raise a warning", func(c *Config) any { return &c.Memory.ConnectedUsersWarning }},
	{"memory.connected_users_critical", "CHATGUARD_CONNECTED_USERS_CRITICAL", "connected-users-critical", "connected users that raise a critical alert", func(c *Config) any { return &c.Memory.ConnectedUsersCritical }},
	{"memory.check_interval", "CHATGUARD_MEMORY_CHECK_INTERVAL", "memory-check-interval", "period of the memory watchdog (0 = off)", func(c *Config) any { return &c.Memory.CheckInterval }},
	{"memory.sweep_interval", "CHATGUARD_SWEEP_INTERVAL", "sweep-interval", "period of the sweep of expired entries (0 = off)", func(c *Config) any { return &c.Memory.SweepInterval }},
	{"memory.shed_fraction", "CHATGUARD_SHED_FRACTION", "shed-fraction", "share of the largest tables dropped in an emergency", func(c *Config) any { return &c.Memory.ShedFraction }},
	{"memory.emergency_cooldown", "CHATGUARD_EMERGENCY_COOLDOWN", "emergency-cooldown", "least time between two emergency cleanups", func(c *Config) any { return &c.Memory.EmergencyCooldown }},
	{"memory.profile_dir", "CHATGUARD_PROFILE_DIR", "profile-dir", "where emergency heap and CPU profiles go (empty = none)", func(c *Config) any { return &c.Memory.ProfileDir }},
	{"memory.max_profiles", "CHATGUARD_MAX_PROFILES", "max-profiles", "profile files kept", func(c *Config) any { return &c.Memory.MaxProfiles }},
	{"memory.cpu_profile", "CHATGUARD_CPU_PROFILE", "cpu-profile", "length of the emergency CPU profile (0 = none)", func(c *Config) any { return &c.Memory.CPUProfile }},
	{"websocket.socketio_path", "CHATGUARD_WS_SOCKETIO_PATH", "ws-socketio-path", "path prefix inspected as Socket.IO", func(c *Config) any { return &c.WebSocket.SocketIOPath }},
	{"websocket.origins", "CHATGUARD_WS_ORIGINS", "ws-origins", "Origin host patterns allowed to open a WebSocket (comma-separated; empty = any)", func(c *Config) any { return &c.WebSocket.Origins }},
	{"websocket.handshake_timeout", "CHATGUARD_WS_HANDSHAKE_TIMEOUT", "ws-handshake-timeout", "dialing the upstream and both WebSocket handshakes", func(c *Config) any { return &c.WebSocket.HandshakeTimeout }},
	{"websocket.idle_timeout", "CHATGUARD_WS_IDLE_TIMEOUT", "ws-idle-timeout", "close a WebSocket after no frame either way (0 = never)", func(c *Config) any { return &c.WebSocket.IdleTimeout }},
	{"websocket.max_message_bytes", "CHATGUARD_WS_MAX_MESSAGE_BYTES", "ws-max-message-bytes", "largest message a WebSocket client may send (close 1009 above)", func(c *Config) any { return &c.WebSocket.MaxMessageBytes }},
	{"websocket.compression", "CHATGUARD_WS_COMPRESSION", "ws-compression", "permessage-deflate toward clients", func(c *Config) any { return &c.WebSocket.Compression }},
	{"websocket.polling", "CHATGUARD_WS_POLLING", "ws-polling", "allow Engine.IO's long-polling transport", func(c *Config) any { return &c.WebSocket.Polling }},
	{"websocket.auth", "CHATGUARD_WS_AUTH", "ws-auth", "none, optional or required for Socket.IO CONNECT", func(c *Config) any { return &c.WebSocket.Auth }},
	{"websocket.drain_close_code", "CHATGUARD_WS_DRAIN_CLOSE_CODE", "ws-drain-close-code", "close code sent to clients on drain (1001 or 1012)", func(c *Config) any { return &c.WebSocket.DrainCloseCode }},
	{"websocket.max_sockets_per_user", "CHATGUARD_WS_MAX_SOCKETS_PER_USER", "ws-max-sockets-per-user", "concurrent sockets of one user (0 = no limit)", func(c *Config) any { return &c.WebSocket.MaxSocketsPerUser }},
	{"websocket.max_sockets_per_ip", "CHATGUARD_WS_MAX_SOCKETS_PER_IP", "ws-max-sockets-per-ip", "concurrent sockets of one client IP (0 = no limit)", func(c *Config) any { return &c.WebSocket.MaxSocketsPerIP }},
	{"websocket.consistency_interval", "CHATGUARD_WS_CONSISTENCY_INTERVAL", "ws-consistency-interval", "period of the connectedUsers/socket consistency check (0 = off)", func(c *Config) any { return &c.WebSocket.ConsistencyCheck }},
	{"alerts.file", "ENABLE_ALERT_FILE", "alert-file", "write every alert as a JSON line to alerts.path", func(c *Config) any { return &c.Alerts.File }},
	{"alerts.path", "CHATGUARD_ALERT_PATH", "alert-path", "the alert file", func(c *Config) any { return &c.Alerts.Path }},
}

// set parses v into the setting's field of c. Leading and trailing
// whitespace is dropped from every value, strings and secrets included:
// a value from a file (kubectl create secret --from-file, $(cat token))
// ends in a newline that nobody sees, and a secret kept with it would fail
// every comparison without a word. The JWT secret is the exception: the
// app signs with it, maybe newline and all (the sidecar manifests give both
// the same Secret key), so it is kept as given and the verifier accepts it
// with and without the whitespace (see Warnings).
func (s Setting) set(c *Config, v string) error {
	if s.Key != "auth.jwt_secret" {
		v = strings.TrimSpace(v)
	}
	switch s.field(c).(type) {
	case *int, *int64, *bool, *float64, *time.Duration:
		if v == "" {
			// VAR= in a manifest, a template that rendered nothing:
			// say so rather than `"" is not a whole number`.
			return errors.New("is empty: give it a value, or leave it out for the default")
		}
	}
	switch p := s.field(c).(type) {
	case *string:
		*p = v
	case *Secret:
		*p = Secret(v)
	case *int:
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("%q is not a whole number", v)
		}
		*p = n
	case *int64:
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return fmt.Errorf("%q is not a whole number", v)
		}
		*p = n
	case *bool:
		// The YAML file's spellings too (yes, on), besides Go's (1, t).
		b, err := strconv.ParseBool(v)
		switch strings.ToLower(v) {
		case "yes", "y", "on":
			b, err = true, nil
		case "no", "n", "off":
			b, err = false, nil
		}
		if err != nil {
			return fmt.Errorf("%q is not true or false", v)
		}
		*p = b
	case *float64:
		f, err := strconv.ParseFloat(v, 64)
		if err != nil {
			return fmt.Errorf("%q is not a number", v)
		}
		*p = f
	case *time.Duration:
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("%q is not a duration (like 5s, 1m30s)", v)
		}
		*p = d
	case *[]string:
		*p = nil
		for _, part := range strings.Split(v, ",") {
			if part = strings.TrimSpace(part); part != "" {
				*p = append(*p, part)
			}
		}
	default:
		return fmt.Errorf("config: setting %s has unsupported type %T", s.Key, p)
	}
	return nil
}

// Value formats the setting's current value in c, secrets hidden.
func (s Setting) Value(c *Config) string {
	v := reflect.ValueOf(s.field(c)).Elem()
	if p, ok := v.Interface().(Secret); ok && s.Key == "redis.url" && p.Reveal() != "" {
		// Which Redis won the precedence is worth seeing; only the
		// credentials are secret (as for upstream). A Sentinel URL's hosts
		// are not the Redis used: say which master they lead to.
		shown := hideUserinfo(p.Reveal())
		if o, err := redisurl.Parse(p.Reveal()); err == nil && o.MasterName != "" {
			shown += " (" + redisurl.Describe(o) + ")"
		}
		return shown
	}
	return formatValue(v)
}

// FileOnlySetting is a setting only the YAML file sets (no variable or
// flag), with its effective value.
type FileOnlySetting struct{ Key, Value string }

// FileOnly lists the settings the file alone sets, routes and event limits
// aside (check-config prints those one a line), in the
// order of the Config struct, each with its effective value (secrets
// filtered), so that check-config shows every value in force, not only
// those of the configuration table (QA: tables, auth.issuer and the abuse
// levels were not shown).
func FileOnly(c *Config) []FileOnlySetting {
	inTable := map[string]bool{"routes": true, "websocket.events": true}
	for _, s := range settings {
		inTable[s.Key] = true
	}
	var out []FileOnlySetting
	var walk func(prefix string, v reflect.Value)
	walk = func(prefix string, v reflect.Value) {
		t := v.Type()
		for i := range t.NumField() {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
			if name == "" || name == "-" {
				continue
			}
			key := prefix + name
			if inTable[key] {
				continue
			}
			f := v.Field(i)
			if f.Kind() == reflect.Struct && f.Type() != reflect.TypeOf(time.Duration(0)) {
				walk(key+".", f)
				continue
			}
			out = append(out, FileOnlySetting{key, formatValue(f)})
		}
	}
	walk("", reflect.ValueOf(c).Elem())
	return out
}

// formatValue formats a setting's value, secrets hidden: durations as
// Go writes them, lists comma-separated, a map of names (auth.role_map) as
// key=value pairs in key order, comma-separated, as a list is (not Go's
// map[k:v]), anything else as fmt's %+v.
func formatValue(f reflect.Value) string {
	switch x := f.Interface().(type) {
	case Secret:
		return x.String()
	case time.Duration:
		return x.String()
	case []string:
		return strings.Join(x, ",")
	case map[string]string:
		pairs := make([]string, 0, len(x))
		for _, k := range slices.Sorted(maps.Keys(x)) {
			pairs = append(pairs, k+"="+x[k])
		}
		return strings.Join(pairs, ",")
	case string:
		return x
	}
	if f.Kind() == reflect.Slice && f.Len() == 0 || f.Kind() == reflect.Map && f.Len() == 0 {
		return ""
	}
	return fmt.Sprintf("%+v", f.Interface())
}
