package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/chatguard/chatguard/internal/testnet"
	"github.com/chatguard/chatguard/sessions"
)

// The test binary doubles as chatguard: with CHATGUARD_TEST_RUN_MAIN=1 it
// runs main, so that signal handling is tested on a real process.
func TestMain(m *testing.M) {
	if os.Getenv("CHATGUARD_TEST_RUN_MAIN") == "1" {
		main()
		return
	}
	goleak.VerifyTestMain(m)
}

func runCmd(t *testing.T, args []string, env map[string]string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), environment{
		args: args, stdout: &out, stderr: &errb,
		lookupEnv: func(k string) (string, bool) { v, ok := env[k]; return v, ok },
		exit:      func(int) { t.Fatal("exit called") },
	})
	return code, out.String(), errb.String()
}

func TestCheckConfig(t *testing.T) {
	t.Parallel()
	code, out, _ := runCmd(t, []string{"check-config"}, nil)
	if code != 0 || !strings.Contains(out, "configuration is valid") || !strings.Contains(out, "proxy.response_header_timeout") {
		t.Fatalf("valid config: %d %s", code, out)
	}
	code, out, _ = runCmd(t, []string{"check-config"}, map[string]string{"CHATGUARD_STATS_TOKEN": "tok-very-secret-0123456789"})
	if code != 0 || strings.Contains(out, "tok-very-secret-0123456789") {
		t.Fatalf("secret printed by check-config: %s", out)
	}
	// A JWT secret under 32 bytes is the app's to change: a warning, exit 0.
	code, out, _ = runCmd(t, []string{"check-config"}, map[string]string{"CHATGUARD_JWT_SECRET": "dev-secret-change-me"})
	if code != 0 || !strings.Contains(out, "warning: auth.jwt_secret is shorter than 32 bytes") || strings.Contains(out, "dev-secret-change-me") {
		t.Fatalf("short JWT secret: %d %s", code, out)
	}
	code, _, errOut := runCmd(t, []string{"check-config", "--listen", "nope", "--env", "staging"},
		map[string]string{"CHATGUARD_DIAL_TIMEOUT": "soon", "CHATGUARD_UPSTREAM": "ftp://x"})
	if code != 2 {
		t.Fatalf("invalid config exit code %d", code)
	}
	for _, want := range []string{"4 problem(s)", "listen (flag --listen): ", "env (flag --env): ", "proxy.dial_timeout (env CHATGUARD_DIAL_TIMEOUT): ", "upstream (env CHATGUARD_UPSTREAM): "} {
		if !strings.Contains(errOut, want) {
			t.Errorf("problems lack %q:\n%s", want, errOut)
		}
	}
	code, _, errOut = runCmd(t, []string{"check-config", "--config", "/does/not/exist.yaml"}, nil)
	if code != 2 || !strings.Contains(errOut, "config file") {
		t.Errorf("missing file: %d %s", code, errOut)
	}
}

// check-config says which master a Sentinel URL leads to, and refuses a
// broken one without quoting its password.
func TestCheckConfigSentinel(t *testing.T) {
	t.Parallel()
	code, out, _ := runCmd(t, []string{"check-config"}, map[string]string{"REDIS_URL": "redis://:s3cret-pw@s1:26379?master_name=mymaster&addr=s2:26379"})
	if code != 0 || !strings.Contains(out, "redis://[FILTERED]@s1:26379?master_name=mymaster&addr=s2:26379 (sentinel master mymaster via 2 sentinels)") || strings.Contains(out, "s3cret-pw") {
		t.Fatalf("sentinel URL: %d %s", code, out)
	}
	code, _, errOut := runCmd(t, []string{"check-config"}, map[string]string{"REDIS_URL": "redis://:s3cret-pw@s1:26379?master_name=mymaster&replica_only=1"})
	if code != 2 || !strings.Contains(errOut, "redis.url (env REDIS_URL): is not a valid Redis Sentinel URL (option replica_only") || strings.Contains(errOut, "s3cret-pw") {
		t.Fatalf("bad sentinel URL: %d %s", code, errOut)
	}
}

func TestServeRefusesInvalidConfig(t *testing.T) {
	t.Parallel()
	code, _, errOut := runCmd(t, []string{"--upstream", "not a url"}, nil)
	if code != 2 || !strings.Contains(errOut, `upstream (flag --upstream): "not a url" must start with http://`) {
		t.Fatalf("serve with invalid config: %d %s", code, errOut)
	}
}

func TestVersionAndUsage(t *testing.T) {
	t.Parallel()
	code, out, _ := runCmd(t, []string{"version"}, nil)
	if code != 0 || !strings.Contains(out, `"goVersion"`) || !strings.Contains(out, `"version"`) {
		t.Fatalf("version: %d %s", code, out)
	}
	for _, flag := range []string{"--version", "-version"} {
		if code, out, _ := runCmd(t, []string{flag}, nil); code != 0 || !strings.Contains(out, `"goVersion"`) {
			t.Fatalf("%s: %d %s", flag, code, out)
		}
	}
	if code, _, _ := runCmd(t, []string{"version", "--foo"}, nil); code != 2 {
		t.Fatalf("version with an argument: exit %d", code)
	}
	if code, _, _ := runCmd(t, []string{"frobnicate"}, nil); code != 2 {
		t.Fatalf("unknown command exit %d", code)
	}
	if code, _, _ := runCmd(t, []string{"serve", "-h"}, nil); code != 0 {
		t.Fatalf("-h exit %d", code)
	}
	// With no command named, the commands come before serve's flags (QA:
	// --help listed 70 flags and no command).
	for _, h := range []string{"--help", "-h"} {
		if code, _, errOut := runCmd(t, []string{h}, nil); code != 0 || !strings.Contains(errOut, "chatguard check-config [flags]") || !strings.Contains(errOut, "-admin-listen") {
			t.Errorf("%s: exit %d\n%s", h, code, errOut)
		}
	}
	// The command after the flags is named as such, not as an unexpected
	// argument of serve.
	for _, args := range [][]string{{"--listen", ":1", "check-config"}, {"--upstrem", "x", "inject"}} { // not when a flag's value: --log-dir version
		code, _, errOut := runCmd(t, args, nil)
		if want := fmt.Sprintf("%q is a command: it goes before the flags (chatguard %s [flags])", args[2], args[2]); code != 2 || !strings.Contains(errOut, want) {
			t.Errorf("%q: exit %d, %q; want 2 and %q", args, code, errOut, want)
		}
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", testnet.FreePort(t, 0))
}

// process is chatguard running as a child process.
type process struct {
	cmd           *exec.Cmd
	public, admin string
	mu            sync.Mutex
	out           bytes.Buffer
	exited        chan struct{}
}

func startProcess(t *testing.T, upstream string, extraEnv ...string) *process {
	t.Helper()
	p := &process{public: freeAddr(t), admin: freeAddr(t), exited: make(chan struct{})}
	p.cmd = exec.Command(os.Args[0], "serve")
	p.cmd.Env = append(os.Environ(),
		"CHATGUARD_TEST_RUN_MAIN=1",
		"CHATGUARD_LISTEN="+p.public,
		"CHATGUARD_ADMIN_LISTEN="+p.admin,
		"CHATGUARD_UPSTREAM="+upstream,
		"CHATGUARD_RATE_LIMIT_FILE="+t.TempDir()+"/rate-limits.json",
		"CHATGUARD_PROFILE_DIR="+t.TempDir(),
	)
	p.cmd.Env = append(p.cmd.Env, extraEnv...)
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stderr = p.cmd.Stdout
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			p.mu.Lock()
			p.out.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
		_ = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		<-p.exited
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get("http://" + p.admin + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("chatguard did not become ready:\n%s", p.output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (p *process) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func (p *process) wait(t *testing.T, within time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(within):
		t.Fatalf("chatguard did not exit within %s:\n%s", within, p.output())
		return -1
	}
}

func blockingUpstream(t *testing.T) (*httptest.Server, chan struct{}, chan struct{}) {
	t.Helper()
	entered, release := make(chan struct{}, 1), make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			entered <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
		}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(up.Close)
	return up, entered, release
}

func TestSIGTERMDrainsAndExitsZero(t *testing.T) {
	up, entered, release := blockingUpstream(t)
	p := startProcess(t, up.URL, "CHATGUARD_DRAIN_DELAY=200ms")

	result := make(chan string, 1)
	go func() {
		resp, err := http.Get("http://" + p.public + "/slow")
		if err != nil {
			result <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		result <- string(b)
	}()
	<-entered
	if err := p.cmd.Process.Signal(syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // past the drain delay: the request is still in flight
	close(release)
	if got := <-result; got != "ok" {
		t.Errorf("in-flight request during shutdown: %q", got)
	}
	if code := p.wait(t, 15*time.Second); code != 0 {
		t.Errorf("exit code %d:\n%s", code, p.output())
	}
	out := p.output()
	for _, want := range []string{"returned free memory to the OS (SIGUSR2)", "drained", "chatguard stopped"} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

// stoppingWithRequestInFlight starts chatguard with a long shutdown
// timeout and a request held by the upstream, so that a drain does not end
// by itself while the test signals.
func stoppingWithRequestInFlight(t *testing.T) *process {
	t.Helper()
	up, entered, release := blockingUpstream(t)
	t.Cleanup(func() { close(release) })
	p := startProcess(t, up.URL, "CHATGUARD_DRAIN_DELAY=0s", "CHATGUARD_SHUTDOWN_TIMEOUT=60s")
	go func() {
		resp, err := http.Get("http://" + p.public + "/slow")
		if err == nil {
			resp.Body.Close()
		}
	}()
	<-entered
	return p
}

// waitLog waits (up to 10 s) for the log to say what.
func (p *process) waitLog(what string) {
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.output(), what) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
}

// A second signal exits at once, but with the rate-limit file saved (QA:
// up to rate_limit.save_interval of counters, login attempts among them,
// were lost).
func TestSecondSignalForcesExit(t *testing.T) {
	p := stoppingWithRequestInFlight(t)
	file := envValue(p.cmd.Env, "CHATGUARD_RATE_LIMIT_FILE")
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	p.waitLog("shutting down gracefully")
	_ = p.cmd.Process.Signal(syscall.SIGINT)
	if code := p.wait(t, 10*time.Second); code != 1 {
		t.Errorf("forced exit code %d:\n%s", code, p.output())
	}
	if b, err := os.ReadFile(file); err != nil || !strings.Contains(string(b), `"entries"`) {
		t.Errorf("rate-limit file after a forced exit: %v %.80s\n%s", err, b, p.output())
	}
}

// envValue is name's value in env (the last one set).
func envValue(env []string, name string) string {
	v := ""
	for _, kv := range env {
		if k, val, _ := strings.Cut(kv, "="); k == name {
			v = val
		}
	}
	return v
}

// One SIGTERM delivered twice at once (timeout(1), tini -g) is one request
// to drain, not the operator's second; the same signal later still forces.
func TestDuplicateSignalIsNotASecond(t *testing.T) {
	p := stoppingWithRequestInFlight(t)
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	p.waitLog("taken as one")
	select {
	case <-p.exited:
		t.Fatalf("exited on a duplicated signal:\n%s", p.output())
	case <-time.After(600 * time.Millisecond):
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if code := p.wait(t, 10*time.Second); code != 1 {
		t.Errorf("a later second SIGTERM: exit code %d:\n%s", code, p.output())
	}
}

func TestStatsHaveTheSeedsBlocks(t *testing.T) {
	up, _, release := blockingUpstream(t)
	defer close(release)
	p := startProcess(t, up.URL, "CHATGUARD_STATS_TOKEN=stats-token-0123456789")
	req, _ := http.NewRequest(http.MethodGet, "http://"+p.admin+"/api/internal/stats", nil)
	req.Header.Set("Authorization", "Bearer stats-token-0123456789")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct {
		Data struct {
			Server struct {
				Memory struct{ HeapUsed, HeapTotal, RSS uint64 } `json:"memory"`
			} `json:"server"`
			MemoryManager struct {
				Global struct {
					TotalMaps int `json:"totalMaps"`
				} `json:"global"`
				Maps map[string]struct {
					MaxEntries int    `json:"maxEntries"`
					HitRate    string `json:"hitRate"`
				} `json:"maps"`
			} `json:"memoryManager"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	mm := out.Data.MemoryManager
	if mm.Global.TotalMaps != 4 || mm.Maps["connectedUsers"].MaxEntries != 50000 || mm.Maps["eventRateLimits"].MaxEntries != 1000000 {
		t.Errorf("memoryManager block: %+v", mm)
	}
	if out.Data.Server.Memory.RSS == 0 || out.Data.Server.Memory.HeapUsed == 0 {
		t.Errorf("server.memory: %+v", out.Data.Server.Memory)
	}
	// One line at start says what this instance enforces (the log is
	// flushed every log.flush_interval).
	p.waitLog(`"msg":"enforcing"`)
	if log := p.output(); !strings.Contains(log, `"msg":"enforcing"`) || !strings.Contains(log, `"rateLimitStore":"memory-only"`) ||
		!strings.Contains(log, `"routes":6`) || !strings.Contains(log, `"replicas":1`) ||
		!strings.Contains(log, `"redisPrefix":"chatguard:rl:"`) || !strings.Contains(log, `"multiplier":1`) {
		t.Errorf("no enforcing line at start, or without what replicas must agree on:\n%s", log)
	}
}

// A change of the config file (and SIGHUP) reloads the routes; a broken
// file is refused and the running configuration stays.
func TestConfigReload(t *testing.T) {
	up, _, release := blockingUpstream(t)
	defer close(release)
	file, write := configFile(t)
	write("log:\n  flush_interval: 0s\n")
	p := startProcess(t, up.URL, "CHATGUARD_CONFIG="+file)
	get := func() int {
		resp, err := http.Get("http://" + p.public + "/extra")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	waitLog := func(what string) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for !strings.Contains(p.output(), what) {
			if time.Now().After(deadline) {
				t.Fatalf("log never said %q:\n%s", what, p.output())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if get() != 200 || get() != 200 {
		t.Fatal("/extra limited before the reload")
	}
	write("log:\n  flush_interval: 0s\nroutes:\n  - name: extra\n    path: /extra\n    limit: {rate: 1, period: 1m, key: [ip]}\n")
	waitLog(`"reason":"the config file changed"`)
	if get() != 200 || get() != 429 {
		t.Fatal("the reloaded limit is not applied")
	}
	write("routes: [this is not valid\n")
	waitLog("configuration reload refused")
	if get() != 429 {
		t.Fatal("a refused configuration replaced the running one")
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitLog(`"reason":"SIGHUP"`)
	if get() != 429 {
		t.Fatal("SIGHUP with a broken file replaced the running configuration")
	}
	// An emptied file (a rewrite caught half-way) would mean the defaults,
	// dropping every route: refused.
	write("")
	waitLog(" is empty")
	if get() != 429 {
		t.Fatal("an empty file replaced the running configuration")
	}
	// A valid file whose other changes cannot apply live says so, loudly.
	// (auth.audience, like every token check, applies live: not named.)
	write("log:\n  flush_interval: 0s\nauth:\n  audience: chat-api\n  cookie: cg_token\nrate_limit:\n  abuse_warning: 3\n  abuse_critical: 5\nroutes:\n  - name: extra\n    path: /extra\n    limit: {rate: 1, period: 1m, key: [ip]}\n")
	waitLog(`"restartNeededFor":["auth.cookie","rate_limit.abuse_warning","rate_limit.abuse_critical"]`)
	if !strings.Contains(p.output(), `"level":"warning","msg":"configuration reloaded`) {
		t.Errorf("a reload that left changes unapplied was not logged as a warning:\n%s", p.output())
	}
}

// RATE_LIMIT_ABUSE alerts go where the watchdog's go: the alert file and
// chatguard_alerts_total, not only the log.
func TestAbuseAlertsReachTheAlertFile(t *testing.T) {
	up, _, release := blockingUpstream(t)
	defer close(release)
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "chatguard.yaml")
	if err := os.WriteFile(cfgFile, []byte("rate_limit:\n  abuse_warning: 2\n  abuse_critical: 4\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	alerts := filepath.Join(dir, "alerts.jsonl")
	p := startProcess(t, up.URL, "CHATGUARD_CONFIG="+cfgFile, "ENABLE_ALERT_FILE=true", "CHATGUARD_ALERT_PATH="+alerts)
	for i := 0; i < 7; i++ { // 3 allowed, then rejections 1–4
		resp, err := http.Post("http://"+p.public+"/api/auth/login", "application/json", strings.NewReader(`{"email":"eve@example.com"}`))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	b, err := os.ReadFile(alerts)
	if err != nil {
		t.Fatalf("alert file: %v\n%s", err, p.output())
	}
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var a struct {
			Type, Severity, IP, Ratio string
			Current, Threshold        int64
		}
		if err := json.Unmarshal([]byte(line), &a); err != nil {
			t.Fatalf("alert line %q: %v", line, err)
		}
		got = append(got, fmt.Sprintf("%s/%s/%s/%d of %d = %s", a.Type, a.Severity, a.IP, a.Current, a.Threshold, a.Ratio))
	}
	if want := "WARNING_RATE_LIMIT_ABUSE/WARNING/127.0.0.1/2 of 2 = 1.00 CRITICAL_RATE_LIMIT_ABUSE/CRITICAL/127.0.0.1/4 of 4 = 1.00"; strings.Join(got, " ") != want {
		t.Fatalf("alerts %q, want %q", got, want)
	}
	resp, err := http.Get("http://" + p.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, sev := range []string{"WARNING", "CRITICAL"} {
		if series := `chatguard_alerts_total{severity="` + sev + `",type="` + sev + `_RATE_LIMIT_ABUSE"} 1`; !strings.Contains(string(body), series) {
			t.Errorf("metrics lack %s", series)
		}
	}
	// The alert lines carry the id of the request that crossed the level,
	// as every line of a request does (QA soak: they had none).
	deadline := time.Now().Add(3 * time.Second)
	for {
		var lines []string
		for _, l := range strings.Split(p.output(), "\n") {
			if strings.Contains(l, "RATE_LIMIT_ABUSE") && strings.Contains(l, `"ip":"127.0.0.1"`) {
				lines = append(lines, l)
			}
		}
		if len(lines) == 2 {
			for _, l := range lines {
				if !strings.Contains(l, `"requestId":"req_`) {
					t.Errorf("alert line without the request's id: %s", l)
				}
				// The alert object, as the memory alerts' lines carry it
				// (the seed's alert format; QA: a pipeline keyed on
				// alert.type missed these).
				var line struct {
					Alert struct{ Type, Severity, IP string }
				}
				if err := json.Unmarshal([]byte(l), &line); err != nil || !strings.HasSuffix(line.Alert.Type, "_RATE_LIMIT_ABUSE") ||
					line.Alert.Severity == "" || line.Alert.IP != "127.0.0.1" {
					t.Errorf("alert line without its alert object (%v): %s", err, l)
				}
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d alert lines in the log, want 2:\n%s", len(lines), p.output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Without any memory limit the start says the heap is not watched, and
// GOMEMLIMIT=off is no limit (review: it silenced the warning); with
// memory.limit set it says nothing.
func TestStartWarnsWithoutAMemoryLimit(t *testing.T) {
	t.Parallel()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	t.Cleanup(up.Close)
	const warning = "no memory limit is known"
	p := startProcess(t, up.URL, "GOMEMLIMIT=off", "CHATGUARD_MEMORY_LIMIT=536870912")
	p.waitLog("chatguard is serving")
	if out := p.output(); !strings.Contains(out, "chatguard is serving") || strings.Contains(out, warning) {
		t.Errorf("warned with memory.limit set, or never served:\n%s", out)
	}
	if debug.SetMemoryLimit(-1) != math.MaxInt64 || sessions.DetectMemoryLimit() > 0 {
		t.Skip("a memory limit is set here (GOMEMLIMIT or the cgroup)")
	}
	p = startProcess(t, up.URL, "GOMEMLIMIT=off")
	p.waitLog(warning)
	if out := p.output(); !strings.Contains(out, warning) {
		t.Errorf("no warning with GOMEMLIMIT=off and no cgroup limit:\n%s", out)
	}
}
