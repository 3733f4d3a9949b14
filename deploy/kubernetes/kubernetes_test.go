// Package kubernetes_test checks every manifest under deploy/kubernetes/
// offline: each document decodes strictly into its k8s.io/api type, and the
// objects of one directory fit together (selectors, named ports, probes,
// references, security contexts, network policies) and fit chatguard (its
// configuration validates, its paths are writable, the grace period covers
// its drain). No cluster is needed; a directory is one deployable unit.
package kubernetes_test

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"iter"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"go.uber.org/goleak"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// decoders gives the typed object for each "apiVersion kind". A document of
// any other kind fails TestManifestsDecodeStrictly: add its k8s.io/api type
// here (or its group to skippedGroups) when a manifest needs a new kind.
var decoders = map[string]func() any{
	"v1 Namespace":      func() any { return new(corev1.Namespace) },
	"v1 ConfigMap":      func() any { return new(corev1.ConfigMap) },
	"v1 Secret":         func() any { return new(corev1.Secret) },
	"v1 Service":        func() any { return new(corev1.Service) },
	"v1 ServiceAccount": func() any { return new(corev1.ServiceAccount) },
	"v1 Pod":            func() any { return new(corev1.Pod) },

	"apps/v1 Deployment":  func() any { return new(appsv1.Deployment) },
	"apps/v1 StatefulSet": func() any { return new(appsv1.StatefulSet) },
	"apps/v1 DaemonSet":   func() any { return new(appsv1.DaemonSet) },
	"batch/v1 Job":        func() any { return new(batchv1.Job) },
	"batch/v1 CronJob":    func() any { return new(batchv1.CronJob) },

	"policy/v1 PodDisruptionBudget":            func() any { return new(policyv1.PodDisruptionBudget) },
	"autoscaling/v2 HorizontalPodAutoscaler":   func() any { return new(autoscalingv2.HorizontalPodAutoscaler) },
	"networking.k8s.io/v1 NetworkPolicy":       func() any { return new(networkingv1.NetworkPolicy) },
	"networking.k8s.io/v1 Ingress":             func() any { return new(networkingv1.Ingress) },
	"rbac.authorization.k8s.io/v1 Role":        func() any { return new(rbacv1.Role) },
	"rbac.authorization.k8s.io/v1 ClusterRole": func() any { return new(rbacv1.ClusterRole) },
	"rbac.authorization.k8s.io/v1 RoleBinding": func() any { return new(rbacv1.RoleBinding) },
	"rbac.authorization.k8s.io/v1 ClusterRoleBinding": func() any {
		return new(rbacv1.ClusterRoleBinding)
	},
	"admissionregistration.k8s.io/v1 MutatingWebhookConfiguration": func() any {
		return new(admissionregistrationv1.MutatingWebhookConfiguration)
	},
	"admissionregistration.k8s.io/v1 ValidatingWebhookConfiguration": func() any {
		return new(admissionregistrationv1.ValidatingWebhookConfiguration)
	},
	// Not an API object: kustomize's file, read loosely (it has many optional
	// fields) and checked by TestKustomizations.
	"kustomize.config.k8s.io/v1beta1 Kustomization": func() any { return new(kustomization) },
}

// looseKinds are decoded without the strict check.
var looseKinds = map[string]bool{"kustomize.config.k8s.io/v1beta1 Kustomization": true}

// skippedGroups are API groups whose Go types are no dependency of this
// module; their documents are read as plain maps (a Certificate's secretName
// still counts as a defined Secret) and the skip is logged.
var skippedGroups = map[string]bool{"cert-manager.io": true}

// clusterScoped kinds carry no namespace; every other object must name one,
// so that a directory applies the same way whatever kubectl's context is.
var clusterScoped = map[string]bool{
	"Namespace": true, "ClusterRole": true, "ClusterRoleBinding": true, "ClusterIssuer": true,
	"MutatingWebhookConfiguration": true, "ValidatingWebhookConfiguration": true,
	"Kustomization": true,
}

type kustomization struct {
	Resources []string `json:"resources"`
}

// doc is one YAML document of a manifest file.
type doc struct {
	File       string // slash-separated, relative to deploy/kubernetes
	Index      int    // 1-based position of the document in its file
	APIVersion string
	Kind       string
	Name       string
	Namespace  string
	Obj        any            // the typed object; nil when skipped or on error
	Loose      map[string]any // the document of a skipped group
	Err        error          // why it did not decode
}

func (d *doc) String() string {
	return fmt.Sprintf("%s#%d %s %s/%s", d.File, d.Index, d.Kind, d.Namespace, d.Name)
}

// Dir is the directory of the file: the unit the cross-object checks see.
func (d *doc) Dir() string { return filepath.ToSlash(filepath.Dir(d.File)) }

// id names the object as the API server would: two documents with one id are
// the same object.
func (d *doc) id() string { return d.APIVersion + " " + d.Kind + " " + d.Namespace + "/" + d.Name }

// manifests are every document under deploy/kubernetes, grouped by directory.
type manifests struct {
	files []string
	dirs  map[string][]*doc
}

var loadManifests = sync.OnceValues(func() (*manifests, error) {
	m := &manifests{dirs: map[string][]*doc{}}
	err := filepath.WalkDir(".", func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		if ext := filepath.Ext(p); ext != ".yaml" && ext != ".yml" {
			return nil
		}
		docs, err := readManifest(p)
		if err != nil {
			return err
		}
		m.files = append(m.files, filepath.ToSlash(p))
		for _, d := range docs {
			m.dirs[d.Dir()] = append(m.dirs[d.Dir()], d)
		}
		return nil
	})
	return m, err
})

// load returns the manifests or stops the test.
func load(t *testing.T) *manifests {
	t.Helper()
	m, err := loadManifests()
	if err != nil {
		t.Fatalf("reading deploy/kubernetes: %v", err)
	}
	return m
}

// eachDir runs f as a parallel subtest for every directory holding manifests.
func (m *manifests) eachDir(t *testing.T, f func(t *testing.T, docs []*doc)) {
	t.Helper()
	for _, dir := range slices.Sorted(maps.Keys(m.dirs)) {
		docs := m.dirs[dir]
		t.Run(dir, func(t *testing.T) {
			t.Parallel()
			f(t, docs)
		})
	}
}

// readManifest splits a file into its documents and decodes each one.
func readManifest(p string) ([]*doc, error) {
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs []*doc
	for i := 1; ; i++ {
		raw, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", p, i, err)
		}
		d := &doc{File: filepath.ToSlash(p), Index: i}
		var probe map[string]any
		if err := yaml.Unmarshal(raw, &probe); err != nil {
			d.Err = err
			docs = append(docs, d)
			continue
		}
		if probe == nil {
			continue // comments only, or an empty document after "---"
		}
		decode(d, raw)
		docs = append(docs, d)
	}
}

func decode(d *doc, raw []byte) {
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name      string `json:"name"`
			Namespace string `json:"namespace"`
		} `json:"metadata"`
	}
	if err := yaml.Unmarshal(raw, &head); err != nil {
		d.Err = err
		return
	}
	d.APIVersion, d.Kind = head.APIVersion, head.Kind
	d.Name, d.Namespace = head.Metadata.Name, head.Metadata.Namespace
	key := d.APIVersion + " " + d.Kind
	group, _, _ := strings.Cut(d.APIVersion, "/")
	switch newObj, ok := decoders[key]; {
	case ok && looseKinds[key]:
		obj := newObj()
		d.Err = yaml.Unmarshal(raw, obj)
		d.Obj = obj
	case ok:
		obj := newObj()
		if d.Err = yaml.UnmarshalStrict(raw, obj); d.Err == nil {
			d.Obj = obj
		}
	case skippedGroups[group]:
		d.Err = yaml.Unmarshal(raw, &d.Loose)
	default:
		d.Err = fmt.Errorf("unknown apiVersion/kind %q: no k8s.io/api type is known for it (see decoders)", key)
	}
}

// all yields the documents whose object is a T.
func all[T any](docs []*doc) iter.Seq2[*doc, T] {
	return func(yield func(*doc, T) bool) {
		for _, d := range docs {
			if o, ok := d.Obj.(T); ok && !yield(d, o) {
				return
			}
		}
	}
}

func TestManifestsDecodeStrictly(t *testing.T) {
	t.Parallel()
	m := load(t)
	for _, want := range []string{"sidecar", "gateway"} {
		if len(m.dirs[want]) == 0 {
			t.Errorf("no manifests in deploy/kubernetes/%s", want)
		}
	}
	if _, err := os.Stat("webhook"); err != nil {
		t.Logf("deploy/kubernetes/webhook not present yet (%v); checked when it is", err)
	}
	m.eachDir(t, func(t *testing.T, docs []*doc) {
		for _, d := range docs {
			switch {
			case d.Err != nil:
				t.Errorf("%s: %v", d, d.Err)
			case d.Loose != nil:
				t.Logf("%s: not decoded strictly: no Go types for %s in go.mod", d, d.APIVersion)
			}
			if d.Kind == "Kustomization" {
				continue
			}
			if d.Name == "" {
				t.Errorf("%s: metadata.name is empty", d)
			}
			switch {
			case clusterScoped[d.Kind] && d.Namespace != "":
				t.Errorf("%s: %s is cluster-scoped; drop metadata.namespace", d, d.Kind)
			case !clusterScoped[d.Kind] && d.Namespace == "":
				t.Errorf("%s: metadata.namespace is empty; name it, so that the directory applies the same way in any kubectl context", d)
			}
		}
	})
}

// TestKustomizations: each kustomization lists files that exist, applies no
// object twice, and leaves out only files that are alternatives to listed
// ones (deployment-classic.yaml next to deployment-native.yaml) or
// templates to fill (*.example.yaml). Without a
// kustomization, a directory must not define an object twice.
func TestKustomizations(t *testing.T) {
	t.Parallel()
	m := load(t)
	m.eachDir(t, func(t *testing.T, docs []*doc) {
		byFile := map[string][]*doc{}
		for _, d := range docs {
			byFile[d.File] = append(byFile[d.File], d)
		}
		var kust *kustomization
		var kustDoc *doc
		for d, k := range all[*kustomization](docs) {
			if kust != nil {
				t.Fatalf("%s: a second kustomization in the directory", d)
			}
			kust, kustDoc = k, d
		}
		listed := map[string]bool{}
		if kust == nil {
			for f := range byFile {
				listed[f] = true
			}
		} else {
			for _, r := range kust.Resources {
				f := kustDoc.Dir() + "/" + r
				if _, err := os.Stat(f); err != nil {
					t.Errorf("%s: resource %q: %v", kustDoc, r, err)
				}
				listed[filepath.ToSlash(filepath.Clean(f))] = true
			}
		}
		applied := map[string]*doc{}
		for f := range listed {
			for _, d := range byFile[f] {
				if prev, dup := applied[d.id()]; dup {
					t.Errorf("%s defines the same object as %s; both would be applied", d, prev)
				}
				applied[d.id()] = d
			}
		}
		for f, fileDocs := range byFile {
			if listed[f] || (kustDoc != nil && f == kustDoc.File) {
				continue
			}
			if strings.HasSuffix(f, ".example.yaml") && kustDoc != nil {
				// A template the user fills and applies alone (the
				// Secret's placeholders, which chatguard refuses: applied
				// with the rest, they crash-looped it and overwrote a
				// Secret made from the user's store).
				continue
			}
			for _, d := range fileDocs {
				if applied[d.id()] == nil {
					t.Errorf("%s is in no resource of %s (and is no alternative to a listed object)", d, kustDoc)
				}
			}
		}
	})
}
