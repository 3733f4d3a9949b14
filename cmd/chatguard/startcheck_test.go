package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runMain runs the test binary as chatguard (see TestMain) in dir, as the
// user uid when it is not -1, and returns its exit code and output.
func runMain(t *testing.T, bin, dir string, uid int, args []string, env ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir = dir
	cmd.Env = append([]string{"CHATGUARD_TEST_RUN_MAIN=1", "PATH=" + os.Getenv("PATH"),
		// Should serve start after all, it must not take a real port.
		"CHATGUARD_LISTEN=127.0.0.1:0", "CHATGUARD_ADMIN_LISTEN=127.0.0.1:0"}, env...)
	if uid >= 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("run %v: %v", args, err)
	}
	return cmd.ProcessState.ExitCode(), out.String(), errOut.String()
}

// check-config says, as warnings with exit 0, what serve would refuse to
// start on: a log.dir or alert file that cannot be created (QA: "valid",
// exit 0, for a setup serve refused with exit 1). Its reason is serve's.
func TestCheckConfigSaysWhatServeCannotOpen(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	file := filepath.Join(root, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	logDir, alerts := filepath.Join(file, "logs"), filepath.Join(file, "alerts.jsonl")
	env := map[string]string{"ENABLE_FILE_LOGGING": "true", "LOG_DIR": logDir, "ENABLE_ALERT_FILE": "true", "CHATGUARD_ALERT_PATH": alerts}
	code, out, _ := runCmd(t, []string{"check-config"}, env)
	logWarn := `warning: serve cannot start here: file logging (log.dir "` + logDir + `"): mkdir ` + file + `: not a directory` + "\n"
	alertWarn := `warning: serve cannot start here: sessions: alert file (alerts.path "` + alerts + `"): mkdir ` + file + `: not a directory` + "\n"
	if code != 0 || !strings.Contains(out, "configuration is valid") || !strings.Contains(out, logWarn) || !strings.Contains(out, alertWarn) {
		t.Fatalf("check-config: exit %d\n%s\nwant exit 0 and\n%s%s", code, out, logWarn, alertWarn)
	}

	// serve stops at each with the same reason.
	code, _, errOut := runMain(t, os.Args[0], root, -1, []string{"serve"}, "ENABLE_FILE_LOGGING=true", "LOG_DIR="+logDir)
	if want := "chatguard: " + strings.TrimPrefix(logWarn, "warning: serve cannot start here: "); code != 1 || errOut != want {
		t.Errorf("serve: exit %d, stderr %q; want 1, %q", code, errOut, want)
	}
	code, stdout, _ := runMain(t, os.Args[0], root, -1, []string{"serve"}, "ENABLE_ALERT_FILE=true", "CHATGUARD_ALERT_PATH="+alerts)
	if want := `"error":"memory management: sessions: alert file (alerts.path \"` + alerts + `\"): mkdir ` + file + `: not a directory"`; code != 1 || !strings.Contains(stdout, want) {
		t.Errorf("serve: exit %d, log:\n%s\nwant 1 and %s", code, stdout, want)
	}

	// Where both can be created, nothing is said and nothing is created.
	env["LOG_DIR"], env["CHATGUARD_ALERT_PATH"] = filepath.Join(root, "a", "logs"), filepath.Join(root, "b", "alerts.jsonl")
	code, out, _ = runCmd(t, []string{"check-config"}, env)
	if code != 0 || strings.Contains(out, "cannot start") {
		t.Errorf("check-config with writable paths: exit %d\n%s", code, out)
	}
	if ents, _ := os.ReadDir(root); len(ents) != 1 {
		t.Errorf("check-config created %v", ents)
	}
}

// QA's case: chatguard as uid 65532 in a directory it cannot write, with
// the default ./logs. As root the test runs the binary as that user; as
// anyone else, as itself.
func TestCheckConfigInAnUnwritableDirectory(t *testing.T) {
	t.Parallel()
	uid := -1
	if os.Geteuid() == 0 {
		uid = 65532
	}
	// A copy of the binary that user can run, in a directory it can read
	// but not write.
	home := t.TempDir()
	dir := filepath.Join(home, "work")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "chatguard.test")
	copyFile(t, os.Args[0], bin)
	for _, d := range []string{dir, home, filepath.Dir(home)} {
		if err := os.Chmod(d, 0o555); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = os.Chmod(d, 0o755) })
	}
	for _, setting := range []struct{ env, want string }{
		{"ENABLE_FILE_LOGGING=true", `warning: serve cannot start here: file logging (log.dir "./logs"): mkdir logs: permission denied`},
		{"ENABLE_ALERT_FILE=true", `warning: serve cannot start here: sessions: alert file (alerts.path "./logs/alerts.jsonl"): mkdir logs: permission denied`},
	} {
		code, out, errOut := runMain(t, bin, dir, uid, []string{"check-config"}, setting.env)
		if code != 0 || !strings.Contains(out, setting.want+"\n") {
			t.Errorf("%s check-config: exit %d\n%s%s\nwant exit 0 and %s", setting.env, code, out, errOut, setting.want)
		}
		if code, _, _ := runMain(t, bin, dir, uid, []string{"serve"}, setting.env); code != 1 {
			t.Errorf("%s serve: exit %d, want 1", setting.env, code)
		}
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	in, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(out, in); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
}
