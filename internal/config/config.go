// Package config loads chatguard's configuration: defaults (the embedded
// deploy/config/chatguard.yaml) < YAML file < environment < flags, then
// validates it in one pass that reports every problem.
package config

import (
	"fmt"
	"time"
)

// Config is the whole configuration. YAML keys are the snake_case tags.
type Config struct {
	Listen      string `yaml:"listen"`
	AdminListen string `yaml:"admin_listen"`
	Upstream    string `yaml:"upstream"`
	Env         string `yaml:"env"`
	StatsToken  Secret `yaml:"stats_token"`

	Proxy  Proxy   `yaml:"proxy"`
	Server Server  `yaml:"server"`
	Log    Log     `yaml:"log"`
	Tables Tables  `yaml:"tables"`
	Memory Memory  `yaml:"memory"`
	Alerts Alerts  `yaml:"alerts"`
	Auth   Auth    `yaml:"auth"`
	Limits Limits  `yaml:"rate_limit"`
	Redis  Redis   `yaml:"redis"`
	Routes []Route `yaml:"routes"`
	// WebSocket configures the WebSocket relay and Socket.IO inspection.
	WebSocket WebSocket `yaml:"websocket"`

	// File is the YAML file the configuration was read from, if any.
	File string `yaml:"-"`
	// Overridden names the file's settings that the environment or a flag
	// set to another value ("rate_limit.multiplier (env
	// RATE_LIMIT_MULTIPLIER)"): an edit of the file does not change them.
	Overridden []string `yaml:"-"`
	// UnknownEnv holds a warning for each CHATGUARD_ environment variable
	// that is no setting (a typo; Source.Environ).
	UnknownEnv []string `yaml:"-"`
}

// Proxy configures the way to the upstream.
type Proxy struct {
	TrustedProxies        []string      `yaml:"trusted_proxies"`
	DialTimeout           time.Duration `yaml:"dial_timeout"`
	ResponseHeaderTimeout time.Duration `yaml:"response_header_timeout"`
	ResponseBodyTimeout   time.Duration `yaml:"response_body_timeout"`
	IdleConnTimeout       time.Duration `yaml:"idle_conn_timeout"`
	MaxIdleConns          int           `yaml:"max_idle_conns"`
	PreserveHost          bool          `yaml:"preserve_host"`
	ErrorInspectBytes     int           `yaml:"error_inspect_bytes"`
	CORSFromUpstream      bool          `yaml:"cors_from_upstream"`
	ReadyOnUpstream       bool          `yaml:"ready_on_upstream"`
}

// Server configures the listeners and the lifecycle.
type Server struct {
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	BodyReadTimeout   time.Duration `yaml:"body_read_timeout"`
	SendTimeout       time.Duration `yaml:"send_timeout"`
	IdleTimeout       time.Duration `yaml:"idle_timeout"`
	MaxHeaderBytes    int           `yaml:"max_header_bytes"`
	MaxHeaderCount    int           `yaml:"max_header_count"`
	MaxBodyBytes      int64         `yaml:"max_body_bytes"`
	DrainDelay        time.Duration `yaml:"drain_delay"`
	ShutdownTimeout   time.Duration `yaml:"shutdown_timeout"`
}

// Log configures logging.
type Log struct {
	Level           string        `yaml:"level"`
	File            bool          `yaml:"file"`
	Dir             string        `yaml:"dir"`
	MaxSizeMB       int           `yaml:"max_size_mb"`
	MaxBackups      int           `yaml:"max_backups"`
	SummaryInterval time.Duration `yaml:"summary_interval"`
	FlushInterval   time.Duration `yaml:"flush_interval"`
}

// Tables sizes the seed's tables. A struct, not a map, so that a file that
// sets only max_entries keeps the default ttl.
type Tables struct {
	ConnectedUsers    Table `yaml:"connectedUsers"`
	ConversationUsers Table `yaml:"conversationUsers"`
	EventRateLimits   Table `yaml:"eventRateLimits"`
	UserRoles         Table `yaml:"userRoles"`
}

// Table bounds one table.
type Table struct {
	MaxEntries int           `yaml:"max_entries"`
	TTL        time.Duration `yaml:"ttl"`
}

// ByName lists the tables with their names.
func (t *Tables) ByName() map[string]*Table {
	return map[string]*Table{
		"connectedUsers": &t.ConnectedUsers, "conversationUsers": &t.ConversationUsers,
		"eventRateLimits": &t.EventRateLimits, "userRoles": &t.UserRoles,
	}
}

// Memory configures the table manager and the memory watchdog.
type Memory struct {
	WarningThreshold       int64         `yaml:"warning_threshold"`
	CriticalThreshold      int64         `yaml:"critical_threshold"`
	HeapWarningRatio       float64       `yaml:"heap_warning_ratio"`
	HeapCriticalRatio      float64       `yaml:"heap_critical_ratio"`
	Limit                  int64         `yaml:"limit"`
	ConnectedUsersWarning  int           `yaml:"connected_users_warning"`
	ConnectedUsersCritical int           `yaml:"connected_users_critical"`
	CheckInterval          time.Duration `yaml:"check_interval"`
	SweepInterval          time.Duration `yaml:"sweep_interval"`
	ShedFraction           float64       `yaml:"shed_fraction"`
	EmergencyCooldown      time.Duration `yaml:"emergency_cooldown"`
	ProfileDir             string        `yaml:"profile_dir"`
	MaxProfiles            int           `yaml:"max_profiles"`
	CPUProfile             time.Duration `yaml:"cpu_profile"`
}

// Alerts configures the alert file.
type Alerts struct {
	File bool   `yaml:"file"`
	Path string `yaml:"path"`
}

// Auth says how users' JWTs are verified.
type Auth struct {
	JWTSecret        Secret   `yaml:"jwt_secret"`
	JWTPublicKeyFile string   `yaml:"jwt_public_key_file"`
	Cookie           string   `yaml:"cookie"`
	Issuer           string   `yaml:"issuer"`
	Audience         string   `yaml:"audience"`
	RequireExpiry    bool     `yaml:"require_expiry"`
	UserClaims       []string `yaml:"user_claims"`
	RoleClaim        string   `yaml:"role_claim"`
	NameClaim        string   `yaml:"name_claim"`
	// RoleMap maps the app's role names (compared case-insensitively) onto
	// admin, agent or basic: owner: admin, moderator: agent.
	RoleMap map[string]string `yaml:"role_map"`
}

// Configured reports whether tokens can be verified at all.
func (a Auth) Configured() bool { return a.JWTSecret != "" || a.JWTPublicKeyFile != "" }

// Limits are the rate limiter's global settings.
type Limits struct {
	Multiplier    float64       `yaml:"multiplier"`
	Shadow        bool          `yaml:"shadow"`
	BodyKeyBytes  int           `yaml:"body_key_bytes"`
	File          string        `yaml:"file"`
	SaveInterval  time.Duration `yaml:"save_interval"`
	AbuseWarning  int           `yaml:"abuse_warning"`
	AbuseCritical int           `yaml:"abuse_critical"`
	BlockFor      time.Duration `yaml:"block_for"`
}

// Redis is the shared rate-limit store.
type Redis struct {
	URL      Secret        `yaml:"url"` // may hold a password
	Timeout  time.Duration `yaml:"timeout"`
	Failures int           `yaml:"failures"`
	Cooldown time.Duration `yaml:"cooldown"`
	Replicas int           `yaml:"replicas"`
	Prefix   string        `yaml:"prefix"`
}

// Route names a group of requests and, optionally, how they are
// authenticated and limited.
type Route struct {
	Name    string      `yaml:"name"`
	Methods []string    `yaml:"methods"`
	Path    string      `yaml:"path"`
	Auth    string      `yaml:"auth"` // none (default), optional, required
	Limit   *RouteLimit `yaml:"limit"`
}

// RouteLimit is a route's rate limit: Rate requests per Period for each key.
type RouteLimit struct {
	Rate   int           `yaml:"rate"`
	Period time.Duration `yaml:"period"`
	Burst  int           `yaml:"burst"`
	// Key parts: ip, user, header:<Name>, body:<field>. A part that cannot
	// be built (no token, no such field) falls back to the ip.
	Key []string `yaml:"key"`
	// Roles give other rates to admin, agent or basic users.
	Roles  map[string]int `yaml:"roles"`
	Shadow bool           `yaml:"shadow"`
}

// WebSocket configures the WebSocket relay and its Socket.IO inspection.
type WebSocket struct {
	// SocketIOPath is the path prefix inspected as Socket.IO; other upgrade
	// paths are relayed frame by frame without inspection.
	SocketIOPath string `yaml:"socketio_path"`
	// Origins are host patterns (path.Match) allowed in a WebSocket's Origin
	// header; empty allows any origin.
	Origins          []string      `yaml:"origins"`
	HandshakeTimeout time.Duration `yaml:"handshake_timeout"`
	// IdleTimeout closes a socket after no frame either way; 0 = never.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxMessageBytes is the ceiling on one client message: a Socket.IO
	// client is held to Engine.IO's maxPayload up to it. The backend's
	// messages are not limited.
	MaxMessageBytes int64 `yaml:"max_message_bytes"`
	Compression     bool  `yaml:"compression"`
	// Polling allows Engine.IO's HTTP long-polling transport.
	Polling bool `yaml:"polling"`
	// Auth is none, optional or required for Socket.IO CONNECT.
	Auth              string        `yaml:"auth"`
	DrainCloseCode    int           `yaml:"drain_close_code"`
	MaxSocketsPerUser int           `yaml:"max_sockets_per_user"`
	MaxSocketsPerIP   int           `yaml:"max_sockets_per_ip"`
	ConsistencyCheck  time.Duration `yaml:"consistency_interval"`
	ErrorEvent        string        `yaml:"error_event"`
	JoinEvent         string        `yaml:"join_event"`
	LeaveEvent        string        `yaml:"leave_event"`
	ConversationField string        `yaml:"conversation_field"`
	Events            []EventLimit  `yaml:"events"`
}

// EventLimit limits one Socket.IO event per user (per client IP for
// anonymous sockets).
type EventLimit struct {
	Name  string     `yaml:"name"`
	Limit RouteLimit `yaml:"limit"`
}

// Development reports whether chatguard runs in development mode.
func (c *Config) Development() bool { return c.Env == "development" }

// Secret is a string that never prints: fmt, logs and JSON see [FILTERED].
type Secret string

// String hides the secret.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[FILTERED]"
}

// GoString hides the secret from %#v.
func (s Secret) GoString() string { return s.String() }

// MarshalText hides the secret from encoders.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// Format hides the secret from every fmt verb, including wrong ones (%d),
// whose error path would otherwise print the raw value.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(s.String())) }

// Reveal returns the secret itself, for the one place that compares it.
func (s Secret) Reveal() string { return string(s) }
