package kubernetes_test

import (
	"fmt"
	"io/fs"
	"net"
	"path"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/chatguard/chatguard/internal/config"
)

// The image and the names of the deployment contract (DESIGN.md, issue 6).
const (
	chatguardImage = "ghcr.io/chatguard/chatguard"
	chatguardName  = "chatguard"       // the container and its public port
	adminPortName  = "chatguard-admin" // the admin port
)

// workload is anything that has a pod template.
type workload struct {
	doc *doc
	// replicas is spec.replicas of a Deployment or StatefulSet (1 when
	// unset); nil for the kinds without one.
	replicas *int32
	pod      *corev1.PodTemplateSpec
}

func (w *workload) String() string { return w.doc.String() }

func workloads(docs []*doc) []*workload {
	var out []*workload
	one := int32(1)
	orOne := func(p *int32) *int32 {
		if p == nil {
			return &one
		}
		return p
	}
	for _, d := range docs {
		switch o := d.Obj.(type) {
		case *appsv1.Deployment:
			out = append(out, &workload{d, orOne(o.Spec.Replicas), &o.Spec.Template})
		case *appsv1.StatefulSet:
			out = append(out, &workload{d, orOne(o.Spec.Replicas), &o.Spec.Template})
		case *appsv1.DaemonSet:
			out = append(out, &workload{d, nil, &o.Spec.Template})
		case *batchv1.Job:
			out = append(out, &workload{d, nil, &o.Spec.Template})
		case *batchv1.CronJob:
			out = append(out, &workload{d, nil, &o.Spec.JobTemplate.Spec.Template})
		case *corev1.Pod:
			out = append(out, &workload{d, nil, &corev1.PodTemplateSpec{ObjectMeta: o.ObjectMeta, Spec: o.Spec}})
		}
	}
	return out
}

// selectedBy reports whether a selector of namespace ns picks w's pods.
func (w *workload) selectedBy(ns string, sel labels.Selector) bool {
	return w.doc.Namespace == ns && sel.Matches(labels.Set(w.pod.Labels))
}

// labelSelector converts ls; nil or invalid selects nothing, {} everything.
func labelSelector(ls *metav1.LabelSelector) labels.Selector {
	if ls == nil {
		return labels.Nothing()
	}
	sel, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil {
		return labels.Nothing()
	}
	return sel
}

// container is a container of a pod spec; init tells the list it is in.
type container struct {
	*corev1.Container
	init bool
}

// sidecar reports a native sidecar: an init container that keeps running.
func (c container) sidecar() bool {
	return c.init && c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
}

func containers(spec *corev1.PodSpec) []container {
	var out []container
	for i := range spec.InitContainers {
		out = append(out, container{&spec.InitContainers[i], true})
	}
	for i := range spec.Containers {
		out = append(out, container{&spec.Containers[i], false})
	}
	return out
}

// imageRepo strips the tag and digest from an image reference.
func imageRepo(image string) string {
	image, _, _ = strings.Cut(image, "@")
	if i := strings.LastIndexByte(image, ':'); i > strings.LastIndexByte(image, '/') {
		image = image[:i]
	}
	return image
}

// subcommand is the chatguard subcommand c runs, given the image's
// ENTRYPOINT ["/chatguard"] and CMD ["serve"] (see the Dockerfile).
func subcommand(c *corev1.Container) string {
	args := c.Args
	if len(c.Command) > 0 {
		args = slices.Concat(c.Command[1:], c.Args)
	} else if len(args) == 0 {
		args = []string{"serve"}
	}
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		return "serve"
	}
	return args[0]
}

// isProxy reports whether c is chatguard serving as the proxy: named
// chatguard or running chatguard's image, and not running another subcommand
// (the same image serves the injection webhook with `inject --webhook`).
func isProxy(c *corev1.Container) bool {
	return (c.Name == chatguardName || imageRepo(c.Image) == chatguardImage) && subcommand(c) == "serve"
}

// proxyOf returns the chatguard proxy container of a pod, if it has one.
func proxyOf(w *workload) (container, bool) {
	for _, c := range containers(&w.pod.Spec) {
		if isProxy(c.Container) {
			return c, true
		}
	}
	return container{}, false
}

// findObject returns the object of type T named name in namespace ns.
func findObject[T any](docs []*doc, ns, name string) (T, bool) {
	for d, o := range all[T](docs) {
		if d.Namespace == ns && d.Name == name {
			return o, true
		}
	}
	var zero T
	return zero, false
}

// environ is what config.Load sees of c's environment: literal values and
// ConfigMap keys. Secrets are left out (their values here are placeholders;
// the real ones come from a secret store), and so are fieldRef and
// resourceFieldRef, which only the kubelet can resolve.
func environ(w *workload, c *corev1.Container, docs []*doc) map[string]string {
	env := map[string]string{}
	ns := w.doc.Namespace
	for _, from := range c.EnvFrom {
		if from.ConfigMapRef == nil {
			continue
		}
		if cm, ok := findObject[*corev1.ConfigMap](docs, ns, from.ConfigMapRef.Name); ok {
			for k, v := range cm.Data {
				env[from.Prefix+k] = v
			}
		}
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			if cm, ok := findObject[*corev1.ConfigMap](docs, ns, ref.Name); ok {
				if v, ok := cm.Data[ref.Key]; ok {
					env[e.Name] = v
				}
			}
		}
	}
	return env
}

// envSet reports whether c sets name in any way (secrets included).
func envSet(c *corev1.Container, name string) bool {
	return slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == name })
}

// mountedFiles maps the path of every ConfigMap key mounted into c to its
// content, as the kubelet would lay the volume out.
func mountedFiles(w *workload, c *corev1.Container, docs []*doc) map[string]string {
	files := map[string]string{}
	for _, m := range c.VolumeMounts {
		vol := volumeNamed(&w.pod.Spec, m.Name)
		if vol == nil {
			continue
		}
		var sources []*corev1.ConfigMapProjection
		if cm := vol.ConfigMap; cm != nil {
			sources = append(sources, &corev1.ConfigMapProjection{LocalObjectReference: cm.LocalObjectReference, Items: cm.Items})
		}
		if p := vol.Projected; p != nil {
			for _, s := range p.Sources {
				if s.ConfigMap != nil {
					sources = append(sources, s.ConfigMap)
				}
			}
		}
		for _, src := range sources {
			cm, ok := findObject[*corev1.ConfigMap](docs, w.doc.Namespace, src.Name)
			if !ok {
				continue
			}
			for key, rel := range keyPaths(cm.Data, src.Items) {
				switch {
				case m.SubPath == "":
					files[path.Join(m.MountPath, rel)] = cm.Data[key]
				case m.SubPath == rel:
					files[m.MountPath] = cm.Data[key]
				}
			}
		}
	}
	return files
}

// keyPaths maps each projected key to its file name in the volume.
func keyPaths(data map[string]string, items []corev1.KeyToPath) map[string]string {
	out := map[string]string{}
	if len(items) == 0 {
		for k := range data {
			out[k] = k
		}
		return out
	}
	for _, it := range items {
		out[it.Key] = it.Path
	}
	return out
}

func volumeNamed(spec *corev1.PodSpec, name string) *corev1.Volume {
	for i := range spec.Volumes {
		if spec.Volumes[i].Name == name {
			return &spec.Volumes[i]
		}
	}
	return nil
}

// eachConfigured calls f for every workload, in every directory, whose proxy
// is chatguard with a configuration that loads (TestChatguardConfigValid
// reports one that does not).
func eachConfigured(t *testing.T, f func(t *testing.T, w *workload, c container, cfg *config.Config, docs []*doc)) {
	load(t).eachDir(t, func(t *testing.T, docs []*doc) {
		for _, w := range workloads(docs) {
			c, ok := proxyOf(w)
			if !ok {
				continue
			}
			if cfg, err := chatguardConfig(w, c.Container, docs); err == nil {
				f(t, w, c, cfg, docs)
			}
		}
	})
}

// chatguardConfig loads chatguard's configuration as the container would:
// its environment (minus secrets) and the files mounted into it, over the
// built-in defaults, validated by chatguard's own code.
func chatguardConfig(w *workload, c *corev1.Container, docs []*doc) (*config.Config, error) {
	env := environ(w, c, docs)
	files := mountedFiles(w, c, docs)
	return config.Load(config.Source{
		LookupEnv: func(k string) (string, bool) {
			v, ok := env[k]
			return v, ok
		},
		ReadFile: func(name string) ([]byte, error) {
			if s, ok := files[name]; ok {
				return []byte(s), nil
			}
			return nil, &fs.PathError{Op: "open", Path: name, Err: fmt.Errorf("%w: not mounted into the container from a ConfigMap of the directory", fs.ErrNotExist)}
		},
	})
}

// listenPort is the port of a listen address such as ":9090".
func listenPort(addr string) int {
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		return -1
	}
	return n
}

// containerPort finds c's port by name or number.
func containerPort(c *corev1.Container, p intstr.IntOrString) (corev1.ContainerPort, bool) {
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp, true
		}
	}
	return corev1.ContainerPort{}, false
}

// podPort finds a port of any container of the pod by name or number.
func podPort(spec *corev1.PodSpec, p intstr.IntOrString) (container, corev1.ContainerPort, bool) {
	for _, c := range containers(spec) {
		if cp, ok := containerPort(c.Container, p); ok {
			return c, cp, true
		}
	}
	return container{}, corev1.ContainerPort{}, false
}
