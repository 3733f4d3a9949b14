package kubernetes_test

import (
	"reflect"
	"slices"
	"strconv"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TestServicesSelectPods: every Service selects the pods of a workload in its
// directory, and each of its target ports is a port of every pod it selects.
func TestServicesSelectPods(t *testing.T) {
	t.Parallel()
	load(t).eachDir(t, func(t *testing.T, docs []*doc) {
		ws := workloads(docs)
		for d, svc := range all[*corev1.Service](docs) {
			if len(svc.Spec.Selector) == 0 {
				t.Errorf("%s: no selector", d)
				continue
			}
			sel := labels.SelectorFromSet(svc.Spec.Selector)
			var selected []*workload
			for _, w := range ws {
				if w.selectedBy(d.Namespace, sel) {
					selected = append(selected, w)
				}
			}
			if len(selected) == 0 {
				t.Errorf("%s: selector %v matches the pods of no workload in %s", d, sel, d.Dir())
			}
			for _, p := range svc.Spec.Ports {
				target := p.TargetPort
				if target.Type == intstr.Int && target.IntVal == 0 {
					target = intstr.FromInt32(p.Port)
				}
				for _, w := range selected {
					if _, cp, ok := podPort(&w.pod.Spec, target); !ok {
						t.Errorf("%s: port %q targets %s, which %s's pods do not declare", d, p.Name, target.String(), w)
					} else if proto(cp.Protocol) != proto(p.Protocol) {
						t.Errorf("%s: port %q is %s, its target in %s is %s", d, p.Name, proto(p.Protocol), w, proto(cp.Protocol))
					}
				}
			}
		}
	})
}

func proto(p corev1.Protocol) corev1.Protocol {
	if p == "" {
		return corev1.ProtocolTCP
	}
	return p
}

// chatguardPaths are the admin endpoints a probe of chatguard may use.
var chatguardPaths = map[string]bool{"/readyz": true, "/healthz": true, "/metrics": true}

// TestProbes: a probe's named port is a port of its own container (that is
// where the kubelet resolves it); chatguard's probes use its admin endpoints:
// readiness on /readyz, startup and liveness on /healthz (never /readyz: a
// draining chatguard is alive and must not be restarted, and a sidecar's
// /readyz waits for the app).
func TestProbes(t *testing.T) {
	t.Parallel()
	load(t).eachDir(t, func(t *testing.T, docs []*doc) {
		for _, w := range workloads(docs) {
			for _, c := range containers(&w.pod.Spec) {
				probes := map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe, "startup": c.StartupProbe}
				for kind, p := range probes {
					if p == nil {
						continue
					}
					if c.init && !c.sidecar() {
						t.Errorf("%s: init container %q has a %s probe; only native sidecars may", w, c.Name, kind)
					}
					checkProbe(t, w, c, kind, p)
				}
			}
		}
	})
}

func checkProbe(t *testing.T, w *workload, c container, kind string, p *corev1.Probe) {
	t.Helper()
	var port intstr.IntOrString
	switch {
	case p.HTTPGet != nil:
		port = p.HTTPGet.Port
	case p.TCPSocket != nil:
		port = p.TCPSocket.Port
	case p.GRPC != nil:
		port = intstr.FromInt32(p.GRPC.Port)
	default: // exec
		if isProxy(c.Container) {
			t.Errorf("%s: chatguard's %s probe is not httpGet (the image has no shell)", w, kind)
		}
		return
	}
	if port.Type == intstr.String {
		if _, ok := containerPort(c.Container, port); !ok {
			t.Errorf("%s: container %q: %s probe port %q is not one of its port names", w, c.Name, kind, port.StrVal)
		}
	}
	if !isProxy(c.Container) {
		return
	}
	if p.HTTPGet == nil {
		t.Errorf("%s: chatguard's %s probe is not httpGet", w, kind)
		return
	}
	if cp, ok := containerPort(c.Container, port); !ok || cp.Name != adminPortName {
		t.Errorf("%s: chatguard's %s probe targets port %s, not %s", w, kind, port.String(), adminPortName)
	}
	// Startup on /healthz: with CHATGUARD_READY_ON_UPSTREAM, /readyz waits
	// for the app, which the kubelet starts only after a native sidecar's
	// startup probe succeeds.
	want := map[string]string{"liveness": "/healthz", "readiness": "/readyz", "startup": "/healthz"}[kind]
	switch path := p.HTTPGet.Path; {
	case !chatguardPaths[path]:
		t.Errorf("%s: chatguard's %s probe asks for %q, which chatguard does not serve (it serves /readyz, /healthz, /metrics)", w, kind, path)
	case path != want:
		t.Errorf("%s: chatguard's %s probe asks for %q; it must be %s", w, kind, path, want)
	}
}

// TestChatguardContainers: wherever chatguard runs as the proxy, the
// container and its public port are both named chatguard, its ports are the
// listeners of its configuration, the image is pinned, resources are set,
// Prometheus annotations point at the admin port, and the native form is
// complete (first init container, restartPolicy Always, startupProbe).
func TestChatguardContainers(t *testing.T) {
	t.Parallel()
	load(t).eachDir(t, func(t *testing.T, docs []*doc) {
		for _, w := range workloads(docs) {
			c, ok := proxyOf(w)
			if !ok {
				continue
			}
			if c.Name != chatguardName {
				t.Errorf("%s: the chatguard container is named %q, want %q", w, c.Name, chatguardName)
			}
			cfg, err := chatguardConfig(w, c.Container, docs)
			if err != nil {
				t.Errorf("%s: chatguard's configuration: %v", w, err)
				continue
			}
			for name, addr := range map[string]string{chatguardName: cfg.Listen, adminPortName: cfg.AdminListen} {
				cp, ok := containerPort(c.Container, intstr.FromString(name))
				if !ok {
					t.Errorf("%s: chatguard has no port named %q", w, name)
				} else if int(cp.ContainerPort) != listenPort(addr) {
					t.Errorf("%s: port %q is %d, but chatguard listens on %q", w, name, cp.ContainerPort, addr)
				}
			}
			if _, tag, _ := cutTag(c.Image); tag == "" || tag == "latest" {
				t.Errorf("%s: image %q is not pinned to a version", w, c.Image)
			}
			if r := c.Resources; r.Requests.Cpu().IsZero() || r.Requests.Memory().IsZero() || r.Limits.Memory().IsZero() {
				t.Errorf("%s: chatguard needs cpu and memory requests and a memory limit (its watchdog judges the heap against the limit)", w)
			}
			a := w.pod.Annotations
			if a["prometheus.io/scrape"] != "true" || a["prometheus.io/path"] != "/metrics" || a["prometheus.io/port"] != strconv.Itoa(listenPort(cfg.AdminListen)) {
				t.Errorf("%s: pod annotations prometheus.io/scrape, /path, /port = %q, %q, %q; want \"true\", \"/metrics\", the admin port",
					w, a["prometheus.io/scrape"], a["prometheus.io/path"], a["prometheus.io/port"])
			}
			if !c.init {
				continue // classic form
			}
			if !c.sidecar() {
				t.Errorf("%s: chatguard is an init container without restartPolicy: Always; it would have to exit before the app starts", w)
			}
			if w.pod.Spec.InitContainers[0].Name != c.Name {
				t.Errorf("%s: chatguard must be the first init container, so that it is up before the others run", w)
			}
			if c.StartupProbe == nil {
				t.Errorf("%s: native chatguard has no startupProbe; the app would start before chatguard is ready", w)
			}
		}
	})
}

// cutTag splits an image reference into repository and tag (or digest).
func cutTag(image string) (repo, tag string, ok bool) {
	repo = imageRepo(image)
	if len(image) > len(repo) {
		return repo, image[len(repo)+1:], true
	}
	return repo, "", false
}

// allowedVolumes are the volume types of the Pod Security "restricted" profile.
var allowedVolumes = map[string]bool{
	"ConfigMap": true, "CSI": true, "DownwardAPI": true, "EmptyDir": true, "Ephemeral": true,
	"PersistentVolumeClaim": true, "Projected": true, "Secret": true,
}

// TestPodSecurityRestricted checks every pod against the Pod Security
// Standards' "restricted" profile (which the namespaces enforce), and
// chatguard against the contract's security context: user and group 65532,
// read-only root filesystem.
func TestPodSecurityRestricted(t *testing.T) {
	t.Parallel()
	load(t).eachDir(t, func(t *testing.T, docs []*doc) {
		for _, w := range workloads(docs) {
			for _, v := range restrictedViolations(&w.pod.Spec) {
				t.Errorf("%s: %s", w, v)
			}
			c, ok := proxyOf(w)
			if !ok {
				continue
			}
			sc := c.SecurityContext
			if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
				t.Errorf("%s: chatguard's root filesystem is not read-only", w)
			}
			if sc == nil || sc.RunAsUser == nil || *sc.RunAsUser != 65532 || sc.RunAsGroup == nil || *sc.RunAsGroup != 65532 {
				t.Errorf("%s: chatguard must run as 65532:65532 (the image's nonroot user)", w)
			}
		}
	})
}

func restrictedViolations(spec *corev1.PodSpec) []string {
	var v []string
	add := func(s string) { v = append(v, s) }
	if spec.HostNetwork || spec.HostPID || spec.HostIPC {
		add("hostNetwork, hostPID and hostIPC must be false")
	}
	psc := spec.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	if len(psc.Sysctls) > 0 {
		add("sysctls are set")
	}
	if psc.RunAsUser != nil && *psc.RunAsUser == 0 {
		add("the pod runs as user 0")
	}
	podNonRoot := psc.RunAsNonRoot != nil && *psc.RunAsNonRoot
	podSeccomp := seccompOK(psc.SeccompProfile)
	for _, vol := range spec.Volumes {
		rv := reflect.ValueOf(vol.VolumeSource)
		for i := range rv.NumField() {
			if !rv.Field(i).IsNil() && !allowedVolumes[rv.Type().Field(i).Name] {
				add("volume " + vol.Name + " is of type " + rv.Type().Field(i).Name)
			}
		}
	}
	for _, c := range containers(spec) {
		sc := c.SecurityContext
		if sc == nil {
			sc = &corev1.SecurityContext{}
		}
		where := "container " + c.Name + ": "
		if sc.Privileged != nil && *sc.Privileged {
			add(where + "privileged")
		}
		if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
			add(where + "allowPrivilegeEscalation must be false")
		}
		if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
			add(where + "capabilities must drop ALL")
		} else if slices.ContainsFunc(sc.Capabilities.Add, func(c corev1.Capability) bool { return c != "NET_BIND_SERVICE" }) {
			add(where + "capabilities may add only NET_BIND_SERVICE")
		}
		if sc.RunAsNonRoot != nil && !*sc.RunAsNonRoot || sc.RunAsNonRoot == nil && !podNonRoot {
			add(where + "runAsNonRoot must be true (pod or container)")
		}
		if sc.RunAsUser != nil && *sc.RunAsUser == 0 {
			add(where + "runs as user 0")
		}
		if sc.SeccompProfile != nil && !seccompOK(sc.SeccompProfile) || sc.SeccompProfile == nil && !podSeccomp {
			add(where + "seccompProfile must be RuntimeDefault or Localhost (pod or container)")
		}
		if sc.ProcMount != nil && *sc.ProcMount != corev1.DefaultProcMount {
			add(where + "procMount must be Default")
		}
		for _, p := range c.Ports {
			if p.HostPort != 0 {
				add(where + "hostPort " + strconv.Itoa(int(p.HostPort)))
			}
		}
	}
	return v
}

func seccompOK(p *corev1.SeccompProfile) bool {
	return p != nil && (p.Type == corev1.SeccompProfileTypeRuntimeDefault || p.Type == corev1.SeccompProfileTypeLocalhost)
}

// TestReferences: every ConfigMap and Secret a pod uses (env, envFrom,
// volumes) is defined in the directory, with the key it names unless the
// reference is optional; a Secret written by a cert-manager Certificate of
// the directory counts as defined. So is a ServiceAccount other than
// default. Every volume mount names a volume.
func TestReferences(t *testing.T) {
	t.Parallel()
	load(t).eachDir(t, func(t *testing.T, docs []*doc) {
		for _, w := range workloads(docs) {
			r := refChecker{t: t, w: w, docs: docs}
			if sa := w.pod.Spec.ServiceAccountName; sa != "" && sa != "default" {
				if _, ok := findObject[*corev1.ServiceAccount](docs, w.doc.Namespace, sa); !ok {
					t.Errorf("%s: ServiceAccount %q is not defined in %s", w, sa, w.doc.Dir())
				}
			}
			for _, v := range w.pod.Spec.Volumes {
				switch {
				case v.ConfigMap != nil:
					r.configMap(v.ConfigMap.Name, "", v.ConfigMap.Optional)
				case v.Secret != nil:
					r.secret(v.Secret.SecretName, "", v.Secret.Optional)
				case v.Projected != nil:
					for _, s := range v.Projected.Sources {
						if s.ConfigMap != nil {
							r.configMap(s.ConfigMap.Name, "", s.ConfigMap.Optional)
						}
						if s.Secret != nil {
							r.secret(s.Secret.Name, "", s.Secret.Optional)
						}
					}
				}
			}
			for _, c := range containers(&w.pod.Spec) {
				for _, e := range c.EnvFrom {
					if e.ConfigMapRef != nil {
						r.configMap(e.ConfigMapRef.Name, "", e.ConfigMapRef.Optional)
					}
					if e.SecretRef != nil {
						r.secret(e.SecretRef.Name, "", e.SecretRef.Optional)
					}
				}
				for _, e := range c.Env {
					if e.ValueFrom != nil && e.ValueFrom.ConfigMapKeyRef != nil {
						ref := e.ValueFrom.ConfigMapKeyRef
						r.configMap(ref.Name, ref.Key, ref.Optional)
					}
					if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
						ref := e.ValueFrom.SecretKeyRef
						r.secret(ref.Name, ref.Key, ref.Optional)
					}
				}
				for _, m := range c.VolumeMounts {
					if volumeNamed(&w.pod.Spec, m.Name) == nil {
						t.Errorf("%s: container %q mounts volume %q, which the pod does not have", w, c.Name, m.Name)
					}
				}
			}
		}
	})
}

type refChecker struct {
	t    *testing.T
	w    *workload
	docs []*doc
}

func (r refChecker) configMap(name, key string, optional *bool) {
	cm, ok := findObject[*corev1.ConfigMap](r.docs, r.w.doc.Namespace, name)
	r.check("ConfigMap", name, key, optional, ok, func() bool {
		_, in := cm.Data[key]
		_, inBinary := cm.BinaryData[key]
		return in || inBinary
	})
}

func (r refChecker) secret(name, key string, optional *bool) {
	s, ok := findObject[*corev1.Secret](r.docs, r.w.doc.Namespace, name)
	if !ok && certificateWrites(r.docs, r.w.doc.Namespace, name) {
		return // cert-manager writes it: tls.crt, tls.key, ca.crt
	}
	r.check("Secret", name, key, optional, ok, func() bool {
		_, in := s.Data[key]
		_, inString := s.StringData[key]
		return in || inString
	})
}

func (r refChecker) check(kind, name, key string, optional *bool, found bool, hasKey func() bool) {
	r.t.Helper()
	opt := optional != nil && *optional
	switch {
	case !found && !opt:
		r.t.Errorf("%s: %s %q is not defined in %s", r.w, kind, name, r.w.doc.Dir())
	case found && key != "" && !opt && !hasKey():
		r.t.Errorf("%s: %s %q has no key %q", r.w, kind, name, key)
	}
}

// certificateWrites reports whether a cert-manager Certificate of the
// directory has secretName name.
func certificateWrites(docs []*doc, ns, name string) bool {
	for _, d := range docs {
		if d.Kind != "Certificate" || d.Namespace != ns || d.Loose == nil {
			continue
		}
		if spec, ok := d.Loose["spec"].(map[string]any); ok && spec["secretName"] == name {
			return true
		}
	}
	return false
}
