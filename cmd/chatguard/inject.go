package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/chatguard/chatguard/internal/inject"
	"github.com/chatguard/chatguard/internal/logging"
)

const injectUsage = `usage: chatguard inject [--mode native|classic] [--image IMAGE] [--upstream-port N] [--services=false] [-f FILE]... [-o FILE]
       chatguard inject --uninject [-f FILE]... [-o FILE]
       chatguard inject --webhook [--listen :8443] --tls-cert-file FILE --tls-key-file FILE [--image IMAGE]

Reads Kubernetes manifests (multi-document YAML, JSON, v1 Lists) and writes them
back as YAML with the chatguard sidecar added to every Pod, Deployment,
StatefulSet, DaemonSet, ReplicaSet, Job and CronJob, and the Services that
select them pointed at chatguard's port. Injecting twice equals injecting once.
Nothing is written unless the whole input transformed. Warnings go to stderr.

Flags:
`

// fileList is a repeatable -f.
type fileList []string

func (f *fileList) String() string     { return strings.Join(*f, ",") }
func (f *fileList) Set(v string) error { *f = append(*f, v); return nil }

// injectCmd runs "chatguard inject": the manifest transform, or with
// --webhook the admission webhook until SIGTERM.
func injectCmd(ctx context.Context, env environment) int {
	fs := flag.NewFlagSet("chatguard inject", flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), injectUsage)
		fs.PrintDefaults()
	}
	var files fileList
	fs.Var(&files, "f", "a manifest `FILE` to read, or a directory's .yaml, .yml and .json files; repeatable; \"-\" or none reads stdin")
	mode := fs.String("mode", string(inject.ModeNative), "the sidecar's `FORM`: native (initContainers, restartPolicy Always) or classic (containers); for the webhook, the default for pods without chatguard.io/mode")
	image := fs.String("image", inject.DefaultImage, "chatguard's `IMAGE`")
	port := fs.Int("upstream-port", 0, "the app's `PORT`, which chatguard forwards to (default: the first containerPort of the app container — the one the kubectl.kubernetes.io/default-container annotation names, else the first — else 3000)")
	uninject := fs.Bool("uninject", false, "remove what inject added and give back the original objects")
	services := fs.Bool("services", true, "point the Services that select an injected workload at chatguard's port; false leaves them as they are (the first step for an app that is running: its old pods have no such port)")
	output := fs.String("o", "", "write the manifests to `FILE` instead of stdout")
	webhook := fs.Bool("webhook", false, "serve the mutating admission webhook instead (POST /mutate, GET /healthz)")
	listen := fs.String("listen", ":8443", "the webhook's `ADDRESS`")
	certFile := fs.String("tls-cert-file", "", "the webhook's TLS certificate `FILE` (PEM)")
	keyFile := fs.String("tls-key-file", "", "the webhook's TLS key `FILE` (PEM)")
	drainDelay := fs.Duration("drain-delay", 5*time.Second, "after SIGTERM, the webhook keeps serving for this `DURATION` while its endpoint leaves the Service (pods created then would be admitted without chatguard: failurePolicy Ignore)")
	if err := fs.Parse(env.args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	usageErr := func(msg string) int {
		fmt.Fprintf(env.stderr, "chatguard inject: %s\n", msg)
		return 2
	}
	if fs.NArg() > 0 {
		return usageErr(fmt.Sprintf("unexpected argument %q (manifests are given with -f)", fs.Arg(0)))
	}
	opts := inject.Options{Image: *image, UpstreamPort: *port, Uninject: *uninject, KeepServices: !*services}
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "mode" { // only a mode asked for warns of pods injected in the other
			opts.Mode = inject.Mode(*mode)
		}
	})
	if *webhook {
		if *uninject || len(files) > 0 || *output != "" || !*services {
			return usageErr("--webhook takes no --uninject, --services, -f or -o")
		}
		if *certFile == "" || *keyFile == "" {
			return usageErr("--webhook needs --tls-cert-file and --tls-key-file")
		}
		if *drainDelay < 0 {
			return usageErr("--drain-delay must not be negative")
		}
		return serveWebhook(ctx, env, opts, *listen, *certFile, *keyFile, *drainDelay)
	}
	srcs, err := readSources(env, files)
	if err != nil {
		fmt.Fprintf(env.stderr, "chatguard inject: %v\n", err)
		return 1
	}
	res, err := inject.Transform(srcs, opts)
	var problems interface{ Unwrap() []error }
	if errors.As(err, &problems) {
		fmt.Fprintf(env.stderr, "chatguard inject: nothing written, %d problem(s):\n", len(problems.Unwrap()))
		for _, p := range problems.Unwrap() {
			fmt.Fprintf(env.stderr, "  - %v\n", p)
		}
		return 1
	}
	if err != nil {
		fmt.Fprintf(env.stderr, "chatguard %v\n", err) // "chatguard inject: …"
		return 1
	}
	for _, w := range res.Warnings {
		fmt.Fprintf(env.stderr, "chatguard inject: warning: %s\n", w)
	}
	if *output == "" {
		_, err = env.stdout.Write(res.Manifests)
	} else {
		err = writeFileAtomic(*output, res.Manifests)
	}
	if err != nil {
		fmt.Fprintf(env.stderr, "chatguard inject: writing the manifests: %v\n", err)
		return 1
	}
	return 0
}

func readSources(env environment, files []string) ([]inject.Source, error) {
	if len(files) == 0 {
		files = []string{"-"}
	}
	files, err := expandDirs(files)
	if err != nil {
		return nil, err
	}
	srcs := make([]inject.Source, 0, len(files))
	for _, f := range files {
		var (
			b   []byte
			err error
		)
		switch {
		case f != "-":
			b, err = os.ReadFile(f)
		case env.stdin != nil:
			b, err = io.ReadAll(env.stdin)
			f = "stdin"
		default:
			f = "stdin"
		}
		if err != nil {
			return nil, err
		}
		srcs = append(srcs, inject.Source{Name: f, Data: b})
	}
	return srcs, nil
}

// expandDirs replaces each directory among files with its .yaml, .yml and
// .json files in name order, as kubectl -f reads a directory (not
// recursively); a directory with none of them is an error.
func expandDirs(files []string) ([]string, error) {
	out := make([]string, 0, len(files))
	for _, f := range files {
		st, err := os.Stat(f)
		if f == "-" || err != nil || !st.IsDir() {
			out = append(out, f) // the read reports what is wrong with it
			continue
		}
		entries, err := os.ReadDir(f)
		if err != nil {
			return nil, err
		}
		n := len(out)
		for _, e := range entries {
			switch filepath.Ext(e.Name()) {
			case ".yaml", ".yml", ".json":
				if !e.IsDir() {
					out = append(out, filepath.Join(f, e.Name()))
				}
			}
		}
		if len(out) == n {
			return nil, fmt.Errorf("%s: a directory without .yaml, .yml or .json files", f)
		}
	}
	return out, nil
}

// writeFileAtomic replaces path with data or leaves it as it was.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) { // it names the temporary file: name the one asked for
			return &fs.PathError{Op: "write", Path: path, Err: pe.Err}
		}
		return err
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing left to remove
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// serveWebhook runs the admission webhook until SIGTERM or SIGINT, then
// finishes the reviews in flight and exits 0.
func serveWebhook(ctx context.Context, env environment, opts inject.Options, listen, certFile, keyFile string, drainDelay time.Duration) int {
	level, _ := env.lookupEnv("LOG_LEVEL")
	logger, err := logging.New(logging.Options{Out: env.stdout, Level: level})
	if err != nil {
		fmt.Fprintf(env.stderr, "chatguard inject: %v\n", err)
		return 1
	}
	defer logger.Close()
	log := logger.WithField(logging.FieldCategory, logging.CategorySystem)
	wh, err := inject.NewWebhook(opts, log)
	if err != nil {
		fmt.Fprintf(env.stderr, "chatguard %v\n", err)
		return 2
	}
	wh.DrainDelay = drainDelay
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	l, err := net.Listen("tcp", listen)
	if err != nil {
		log.WithError(err).Error("cannot listen")
		return 1
	}
	log.WithField("listen", l.Addr().String()).Info("chatguard injector serving")
	if err := wh.ServeTLS(ctx, l, certFile, keyFile); err != nil {
		log.WithError(err).Error("webhook stopped")
		return 1
	}
	log.Info("chatguard injector stopped")
	return 0
}
