package inject

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// The golden cases: testdata/NAME.in.{yaml,json} → NAME.native.golden.yaml,
// NAME.classic.golden.yaml and NAME.uninject.golden.yaml (the native output
// uninjected). Every case also checks that injecting the output again
// changes no byte, that uninjecting gives back the input's objects, and that
// every injected pod spec is a valid corev1.PodSpec with the sidecar.
func TestGolden(t *testing.T) {
	t.Parallel()
	ins, err := filepath.Glob("testdata/*.in.*")
	if err != nil || len(ins) < 10 {
		t.Fatalf("golden inputs: %v %v", ins, err)
	}
	for _, in := range ins {
		name, _, _ := strings.Cut(filepath.Base(in), ".in.")
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			src, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			already := strings.HasPrefix(name, "already-injected") // in the native form
			for _, mode := range []Mode{ModeNative, ModeClassic} {
				got := mustTransform(t, src, Options{Mode: mode})
				compareGolden(t, "testdata/"+name+"."+string(mode)+".golden.yaml", got.Manifests)
				// Injecting again changes nothing and warns of nothing, but of
				// the objects it leaves alone (as the first time).
				again := mustTransform(t, got.Manifests, Options{Mode: mode})
				if !bytes.Equal(again.Manifests, got.Manifests) || slices.ContainsFunc(again.Warnings, func(w string) bool { return !strings.Contains(w, "left as it is") }) {
					t.Errorf("%s: injecting twice differs from injecting once:\n%s", mode, again.Manifests)
				}
				if already && !bytes.Equal(got.Manifests, withoutComments(src)) {
					t.Errorf("%s: injected input changed:\n%s", mode, got.Manifests)
				}
				// Asked for the other form, it says so instead of passing for done.
				if other := slices.ContainsFunc(got.Warnings, func(w string) bool { return strings.Contains(w, "already injected as a native sidecar") }); already && other != (mode == ModeClassic) {
					t.Errorf("%s: warnings %q: want one that the pod has a native sidecar only for --mode classic", mode, got.Warnings)
				}
				if already {
					checkInjected(t, got.Manifests, ModeNative)
				} else {
					checkInjected(t, got.Manifests, mode)
				}
				un := mustTransform(t, got.Manifests, Options{Uninject: true})
				if mode == ModeNative {
					compareGolden(t, "testdata/"+name+".uninject.golden.yaml", un.Manifests)
				}
				if want, have := decodeAll(t, src), decodeAll(t, un.Manifests); !already && !reflect.DeepEqual(want, have) {
					t.Errorf("%s: uninject(inject(x)) != x:\n%s", mode, un.Manifests)
				}
			}
		})
	}
}

// Input that is already injected comes out byte for byte, in either mode
// (the golden case already-injected checks a Pod; this, every golden output).
func TestAlreadyInjectedIsUnchanged(t *testing.T) {
	t.Parallel()
	goldens, _ := filepath.Glob("testdata/*.native.golden.yaml")
	classic, _ := filepath.Glob("testdata/*.classic.golden.yaml")
	for _, g := range append(goldens, classic...) {
		src, err := os.ReadFile(g)
		if err != nil {
			t.Fatal(err)
		}
		for _, mode := range []Mode{ModeNative, ModeClassic} {
			if got := mustTransform(t, src, Options{Mode: mode}); !bytes.Equal(got.Manifests, src) {
				t.Errorf("%s, injected %s: changed:\n%s", g, mode, got.Manifests)
			}
		}
	}
}

// withoutComments drops the leading comment lines of a golden input.
func withoutComments(b []byte) []byte {
	for bytes.HasPrefix(b, []byte("#")) {
		_, b, _ = bytes.Cut(b, []byte("\n"))
	}
	return b
}

func TestWarnings(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		mode Mode
		want []string
	}{
		{"own-prestop", ModeNative, []string{`document 1 (Deployment legacy-chat): no spec.replicas`, `document 1 (Deployment legacy-chat): container "app" has a preStop hook of its own, left as it is`}},
		{"daemonset", ModeNative, []string{"document 1 (DaemonSet edge-chat): a DaemonSet runs a pod per node", "document 1 (DaemonSet edge-chat): the pod template has prometheus.io annotations already"}},
		{"job", ModeClassic, []string{"document 1 (Job backfill): restartPolicy Never with a classic sidecar"}},
		{"cronjob", ModeClassic, []string{"restartPolicy OnFailure with a classic sidecar"}},
		{"job", ModeNative, nil},
		{"deployment", ModeNative, []string{"document 1 (Deployment legacy-chat): CHATGUARD_REPLICAS=3, from spec.replicas",
			`document 2 (Service legacy-chat): port 80 now goes to chatguard's port "chatguard", which pods started before the injection do not have`}},
	} {
		src, err := os.ReadFile("testdata/" + tc.in + ".in.yaml")
		if err != nil {
			t.Fatal(err)
		}
		got := mustTransform(t, src, Options{Mode: tc.mode}).Warnings
		if len(got) != len(tc.want) {
			t.Errorf("%s %s: warnings %q, want %d", tc.in, tc.mode, got, len(tc.want))
			continue
		}
		for i, w := range tc.want {
			if !strings.Contains(got[i], w) {
				t.Errorf("%s %s: warning %q lacks %q", tc.in, tc.mode, got[i], w)
			}
		}
	}
}

func mustTransform(t *testing.T, src []byte, o Options) *Result {
	t.Helper()
	res, err := Transform([]Source{{Name: "test", Data: src}}, o)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func compareGolden(t *testing.T, file string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(file, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (run go test -update to write it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (go test -update rewrites it); got:\n%s", file, got)
	}
}

// decodeAll returns the objects of manifests, List items included in their List.
func decodeAll(t *testing.T, manifests []byte) []map[string]any {
	t.Helper()
	docs, err := parse(Source{Name: "test", Data: manifests})
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, d := range docs {
		if d.obj != nil {
			out = append(out, d.obj)
		}
	}
	return out
}

// checkInjected checks every workload of manifests: its pod spec decodes
// strictly into corev1.PodSpec and has the chatguard container, in the
// place mode puts it, with a port named chatguard; the marker is on the pod
// template and on the workload.
func checkInjected(t *testing.T, manifests []byte, mode Mode) {
	t.Helper()
	var objs []object
	var errs []error
	for _, d := range decodeAll(t, manifests) {
		objs, errs = flatten(objs, errs, "test", d)
	}
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	for _, ob := range objs {
		wk, ok := workloadKindOf(ob.m)
		if !ok {
			continue
		}
		pt, err := openPodTemplate(ob.m, wk)
		if err != nil {
			t.Fatalf("%s: %v", ob.where, err)
		}
		if !pt.injected() {
			t.Errorf("%s: no %s on the pod template", ob.where, AnnotationInjected)
		}
		if a, _ := annotationsOf(ob.m, false); a[AnnotationInjected] != injectedValue {
			t.Errorf("%s: no %s on the workload", ob.where, AnnotationInjected)
		}
		if err := checkPodSpec(pt.spec, mode); err != nil {
			t.Errorf("%s: %v", ob.where, err)
		}
	}
}

// checkPodSpec is the check every injected pod spec passes.
func checkPodSpec(spec map[string]any, mode Mode) error {
	j, err := json.Marshal(spec)
	if err != nil {
		return err
	}
	var ps corev1.PodSpec
	if err := yaml.UnmarshalStrict(j, &ps); err != nil {
		return err
	}
	where := ps.Containers
	if mode == ModeNative {
		where = ps.InitContainers
		if len(where) == 0 || where[0].Name != "chatguard" {
			return errorf("chatguard is not the first init container")
		}
		if where[0].RestartPolicy == nil || *where[0].RestartPolicy != corev1.ContainerRestartPolicyAlways || where[0].StartupProbe == nil {
			return errorf("the native sidecar lacks restartPolicy Always or its startupProbe")
		}
	}
	i := slices.IndexFunc(where, func(c corev1.Container) bool { return c.Name == "chatguard" })
	if i < 0 {
		return errorf("no container chatguard in the %s place", mode)
	}
	if !slices.ContainsFunc(where[i].Ports, func(p corev1.ContainerPort) bool { return p.Name == "chatguard" && p.ContainerPort == 8080 }) {
		return errorf("container chatguard has no port chatguard")
	}
	if ps.TerminationGracePeriodSeconds == nil || *ps.TerminationGracePeriodSeconds < 45 {
		return errorf("terminationGracePeriodSeconds %v < 45", ps.TerminationGracePeriodSeconds)
	}
	return nil
}
