package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chatguard/chatguard/internal/testnet"
)

const sampleManifests = `apiVersion: apps/v1
kind: Deployment
metadata: {name: legacy-chat, namespace: chat}
spec:
  replicas: 1
  selector: {matchLabels: {app.kubernetes.io/name: legacy-chat}}
  template:
    metadata: {labels: {app.kubernetes.io/name: legacy-chat}}
    spec:
      containers:
      - {name: app, image: "ghcr.io/example/legacy-chat:1.0.0", ports: [{name: http, containerPort: 3000}]}
---
apiVersion: v1
kind: Service
metadata: {name: legacy-chat, namespace: chat}
spec:
  selector: {app.kubernetes.io/name: legacy-chat}
  ports: [{name: http, port: 80, targetPort: http}]
`

func runInject(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), environment{
		args: append([]string{"inject"}, args...), stdin: strings.NewReader(stdin), stdout: &out, stderr: &errb,
		lookupEnv: func(string) (string, bool) { return "", false },
		exit:      func(int) { t.Fatal("exit called") },
	})
	return code, out.String(), errb.String()
}

func TestInjectCommand(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	in := filepath.Join(dir, "app.yaml")
	if err := os.WriteFile(in, []byte(sampleManifests), 0o644); err != nil {
		t.Fatal(err)
	}
	code, injected, errOut := runInject(t, "", "-f", in, "--mode", "classic", "--image", "registry.example/chatguard:9")
	// The one warning: the Service, pointed at a port the running pods lack.
	if code != 0 || strings.Count(errOut, "\n") != 1 || !strings.Contains(errOut, "chatguard inject: warning: "+in+": document 2 (Service legacy-chat): port 80 now goes to chatguard's port \"chatguard\", which pods started before the injection do not have") {
		t.Fatalf("inject: %d %s", code, errOut)
	}
	for _, want := range []string{"image: registry.example/chatguard:9", "targetPort: chatguard", "chatguard.io/injected: \"true\"", "name: chatguard\n"} {
		if !strings.Contains(injected, want) {
			t.Errorf("output lacks %q:\n%s", want, injected)
		}
	}
	if strings.Contains(injected, "initContainers") {
		t.Errorf("--mode classic made a native sidecar")
	}
	// --services=false: the workload alone (a running app's first step),
	// and the Service after the rollout.
	code, first, errOut := runInject(t, sampleManifests, "--mode", "classic", "--image", "registry.example/chatguard:9", "--services=false")
	if code != 0 || errOut != "" || strings.Contains(first, "targetPort: chatguard") || !strings.Contains(first, "targetPort: http") || !strings.Contains(first, "name: chatguard\n") {
		t.Errorf("--services=false: %d %s\n%s", code, errOut, first)
	}
	if code, second, _ := runInject(t, first); code != 0 || second != injected {
		t.Errorf("the second step differs from injecting at once: %d\n%s", code, second)
	}
	// stdin, "-", -o; injecting again changes nothing.
	out := filepath.Join(dir, "out.yaml")
	if code, stdout, errOut := runInject(t, injected, "-f", "-", "-o", out); code != 0 || stdout != "" || errOut != "" {
		t.Fatalf("stdin to -o: %d %q %s", code, stdout, errOut)
	}
	if b, _ := os.ReadFile(out); string(b) != injected {
		t.Errorf("injecting twice differs:\n%s", b)
	}
	// Asked for the other form, it says the workload stays as it is.
	if code, stdout, errOut := runInject(t, injected, "--mode", "native"); code != 0 || stdout != injected || !strings.Contains(errOut, "already injected as a classic sidecar, left as it is") {
		t.Errorf("--mode native on a classic sidecar: %d %q", code, errOut)
	}
	code, restored, _ := runInject(t, injected, "--uninject")
	if code != 0 || strings.Contains(restored, "chatguard") || !strings.Contains(restored, "targetPort: http") {
		t.Errorf("uninject: %d\n%s", code, restored)
	}
	// A bad input: every problem listed, exit 1, -o left as it was.
	bad := "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: []}\n---\nkind: x\n"
	code, stdout, errOut := runInject(t, bad, "-o", out)
	if code != 1 || stdout != "" || !strings.Contains(errOut, "nothing written, 2 problem(s)") ||
		!strings.Contains(errOut, "stdin: document 1 (Pod a): pod spec has no containers") || !strings.Contains(errOut, "stdin: document 2: not a Kubernetes object") {
		t.Errorf("bad input: %d %q %s", code, stdout, errOut)
	}
	if b, _ := os.ReadFile(out); string(b) != injected {
		t.Errorf("-o changed by a failed run")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Errorf("temporary files left: %v", entries)
	}
	// -o into a directory that does not exist names the file asked for.
	missing := filepath.Join(dir, "missing", "x.yaml")
	if code, _, errOut := runInject(t, injected, "-o", missing); code != 1 || !strings.Contains(errOut, "write "+missing+": no such file or directory") {
		t.Errorf("-o into a missing directory: %d %s", code, errOut)
	}
	// Warnings go to stderr, the manifests to stdout.
	prestop := strings.Replace(sampleManifests, "containerPort: 3000}]}", "containerPort: 3000}], lifecycle: {preStop: {exec: {command: [\"true\"]}}}}", 1)
	if code, stdout, errOut := runInject(t, prestop); code != 0 || !strings.Contains(errOut, "chatguard inject: warning: stdin: document 1 (Deployment legacy-chat): container \"app\" has a preStop hook of its own") || !strings.Contains(stdout, "kind: Deployment") {
		t.Errorf("warning: %d %s", code, errOut)
	}
}

func TestInjectUsageErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"-h"}, 0, "--uninject"},
		{[]string{"--nope"}, 2, "flag provided but not defined"},
		{[]string{"app.yaml"}, 2, `unexpected argument "app.yaml"`},
		{[]string{"--webhook"}, 2, "--webhook needs --tls-cert-file and --tls-key-file"},
		{[]string{"--webhook", "-f", "x.yaml"}, 2, "--webhook takes no --uninject, --services, -f or -o"},
		{[]string{"--webhook", "--services=false"}, 2, "--webhook takes no --uninject, --services, -f or -o"},
		{[]string{"--mode", "sideways"}, 1, `mode "sideways"`},
		{[]string{"-f", "/does/not/exist.yaml"}, 1, "no such file"},
		{[]string{"--webhook", "--tls-cert-file", "/nope.crt", "--tls-key-file", "/nope.key", "--listen", "127.0.0.1:0"}, 1, "loading the TLS key pair"},
	} {
		code, stdout, errOut := runInject(t, "", tc.args...)
		if code != tc.code || !strings.Contains(stdout+errOut, tc.want) { // the webhook logs to stdout
			t.Errorf("%v: %d %s%s", tc.args, code, stdout, errOut)
		}
	}
}

// chatguard inject -f FILE as a real process.
func TestInjectProcess(t *testing.T) {
	t.Parallel()
	in := filepath.Join(t.TempDir(), "app.yaml")
	if err := os.WriteFile(in, []byte(sampleManifests), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "inject", "-f", in)
	cmd.Env = append(os.Environ(), "CHATGUARD_TEST_RUN_MAIN=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%v: %s", err, stderr.String())
	}
	if !strings.Contains(stdout.String(), "restartPolicy: Always") || !strings.Contains(stdout.String(), "targetPort: chatguard") {
		t.Errorf("output:\n%s", stdout.String())
	}
	cmd = exec.Command(os.Args[0], "inject", "--uninject")
	cmd.Env = append(os.Environ(), "CHATGUARD_TEST_RUN_MAIN=1")
	cmd.Stdin = bytes.NewReader(stdout.Bytes())
	restored, err := cmd.Output()
	if err != nil || strings.Contains(string(restored), "chatguard") {
		t.Errorf("uninject through stdin: %v\n%s", err, restored)
	}
}

// chatguard inject --webhook as a real process: serves TLS, stops on SIGTERM with 0.
func TestInjectWebhookProcess(t *testing.T) {
	t.Parallel()
	certFile, keyFile, pool := testnet.SelfSigned(t)
	addr := freeAddr(t)
	cmd := exec.Command(os.Args[0], "inject", "--webhook", "--listen", addr, "--tls-cert-file", certFile, "--tls-key-file", keyFile)
	cmd.Env = append(os.Environ(), "CHATGUARD_TEST_RUN_MAIN=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := client.Get("https://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the webhook did not come up: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	tr.CloseIdleConnections()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err // for the cleanup
		if err != nil {
			t.Errorf("exit: %v\n%s", err, out.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the webhook did not stop on SIGTERM")
	}
	if !strings.Contains(out.String(), "chatguard injector stopped") {
		t.Errorf("log:\n%s", out.String())
	}
}

// -f DIR reads the directory's manifests, as kubectl -f does (QA: "read
// dir: is a directory").
func TestInjectDirectory(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	deploy, service, _ := strings.Cut(sampleManifests, "---\n")
	for name, body := range map[string]string{"a-deploy.yaml": deploy, "b-svc.yml": service, "notes.txt": "not a manifest", "c.json": `{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}`} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "sub.yaml"), 0o755); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runInject(t, "", "-f", dir)
	if code != 0 || strings.Count(out, "\n---\n") != 2 || !strings.Contains(out, "name: chatguard\n") || !strings.Contains(out, "targetPort: chatguard") ||
		!strings.Contains(out, "kind: ConfigMap") || !strings.Contains(errOut, filepath.Join(dir, "b-svc.yml")+": document 1 (Service legacy-chat)") {
		t.Errorf("-f %s: %d %s\n%s", dir, code, errOut, out)
	}
	empty := t.TempDir()
	if code, _, errOut := runInject(t, "", "-f", empty); code != 1 || !strings.Contains(errOut, "a directory without .yaml, .yml or .json files") {
		t.Errorf("-f empty dir: %d %s", code, errOut)
	}
}
