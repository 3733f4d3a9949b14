package kubernetes_test

import (
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/chatguard/chatguard/internal/config"
)

// configKey is the ConfigMap key that holds chatguard's YAML file.
const configKey = "chatguard.yaml"

// TestChatguardConfigValid: every chatguard.yaml in a ConfigMap passes
// chatguard's own validation on its own, and so does the configuration each
// chatguard container would load (its environment minus secrets, its mounted
// files); a container that names a config file must have it mounted.
func TestChatguardConfigValid(t *testing.T) {
	t.Parallel()
	load(t).eachDir(t, func(t *testing.T, docs []*doc) {
		for d, cm := range all[*corev1.ConfigMap](docs) {
			data, ok := cm.Data[configKey]
			if !ok {
				continue
			}
			const file = "/etc/chatguard/chatguard.yaml"
			_, err := config.Load(config.Source{
				LookupEnv: func(k string) (string, bool) { return file, k == "CHATGUARD_CONFIG" },
				ReadFile: func(name string) ([]byte, error) {
					if name != file {
						return nil, fs.ErrNotExist
					}
					return []byte(data), nil
				},
			})
			if err != nil {
				t.Errorf("%s: %s: %v", d, configKey, err)
			}
		}
		for _, w := range workloads(docs) {
			c, ok := proxyOf(w)
			if !ok {
				continue
			}
			cfg, err := chatguardConfig(w, c.Container, docs)
			if err != nil {
				t.Errorf("%s: chatguard would not start: %v", w, err)
				continue
			}
			if cfg.File == "" && mountsConfigMapWith(w, c.Container, docs, configKey) {
				t.Errorf("%s: %s is mounted, but CHATGUARD_CONFIG does not name it", w, configKey)
			}
		}
	})
}

func mountsConfigMapWith(w *workload, c *corev1.Container, docs []*doc, key string) bool {
	for _, m := range c.VolumeMounts {
		if v := volumeNamed(&w.pod.Spec, m.Name); v != nil && v.ConfigMap != nil {
			if cm, ok := findObject[*corev1.ConfigMap](docs, w.doc.Namespace, v.ConfigMap.Name); ok {
				if _, has := cm.Data[key]; has {
					return true
				}
			}
		}
	}
	return false
}

// imageWorkdir is where relative paths resolve in the image (the Dockerfile's
// WORKDIR), on the root filesystem.
const imageWorkdir = "/home/nonroot"

// TestWritablePaths: every path chatguard writes (the rate-limit file, the
// profile directory, the log directory, the alert file) lies on a writable
// volume mounted into the container, since its root filesystem is read-only,
// and every such emptyDir is bounded by a sizeLimit.
func TestWritablePaths(t *testing.T) {
	t.Parallel()
	eachConfigured(t, func(t *testing.T, w *workload, c container, cfg *config.Config, docs []*doc) {
		dirs := map[string]string{ // setting → the directory chatguard writes into
			"rate_limit.file (CHATGUARD_RATE_LIMIT_FILE)": parentOf(cfg.Limits.File),
			"memory.profile_dir (CHATGUARD_PROFILE_DIR)":  cfg.Memory.ProfileDir,
			"log.dir (LOG_DIR)":                           cfg.Log.Dir,
			"alerts.path (CHATGUARD_ALERT_PATH)":          parentOf(cfg.Alerts.Path),
		}
		for setting, dir := range dirs {
			if dir == "" {
				continue // not written at all
			}
			if !path.IsAbs(dir) {
				wd := c.WorkingDir
				if wd == "" {
					wd = imageWorkdir
				}
				dir = path.Join(wd, dir)
			}
			m, vol := writableMount(w, c.Container, dir)
			switch {
			case m == nil:
				t.Errorf("%s: chatguard writes %s under %s, which is on no writable volume mount", w, setting, dir)
			case vol.EmptyDir != nil && vol.EmptyDir.SizeLimit == nil:
				t.Errorf("%s: emptyDir %q (for %s) has no sizeLimit; it could fill the node's disk", w, vol.Name, setting)
			}
		}
	})
}

// parentOf is the directory of a file path; "" stays "" (not written).
func parentOf(file string) string {
	if file == "" {
		return ""
	}
	return path.Dir(file)
}

// writableMount finds the mount of c that holds dir, if it is writable.
func writableMount(w *workload, c *corev1.Container, dir string) (*corev1.VolumeMount, *corev1.Volume) {
	var best *corev1.VolumeMount
	for i, m := range c.VolumeMounts {
		mp := path.Clean(m.MountPath)
		if (dir == mp || strings.HasPrefix(dir, mp+"/")) && (best == nil || len(mp) > len(path.Clean(best.MountPath))) {
			best = &c.VolumeMounts[i]
		}
	}
	if best == nil || best.ReadOnly {
		return nil, nil
	}
	v := volumeNamed(&w.pod.Spec, best.Name)
	if v == nil || (v.EmptyDir == nil && v.PersistentVolumeClaim == nil && v.Ephemeral == nil) {
		return nil, nil // configMap, secret, projected, downwardAPI: read-only
	}
	return best, v
}

// margin is what the grace period keeps beyond chatguard's own drain: the
// app's exit after its SIGTERM, and the kubelet's own latency.
const margin = 10 * time.Second

// TestTerminationGrace: the pod's grace period covers chatguard's drain
// (drain_delay + shutdown_timeout, as its configuration sets them) plus a
// margin; otherwise the kubelet kills it mid-drain.
func TestTerminationGrace(t *testing.T) {
	t.Parallel()
	eachConfigured(t, func(t *testing.T, w *workload, c container, cfg *config.Config, docs []*doc) {
		grace := 30 * time.Second // the API's default
		if g := w.pod.Spec.TerminationGracePeriodSeconds; g != nil {
			grace = time.Duration(*g) * time.Second
		}
		if need := cfg.Server.DrainDelay + cfg.Server.ShutdownTimeout + margin; grace < need {
			t.Errorf("%s: terminationGracePeriodSeconds is %s; chatguard needs drain_delay %s + shutdown_timeout %s + %s = %s",
				w, grace, cfg.Server.DrainDelay, cfg.Server.ShutdownTimeout, margin, need)
		}
	})
}

// The parts of a preStop command that calls chatguard's /drain: a URL
// (curl, wget) or the options of Node's http.request.
var (
	drainURL     = regexp.MustCompile(`https?://([^/:'"\s]+):(\d+)/drain\b`)
	nodeHost     = regexp.MustCompile(`host\s*:\s*['"]([^'"]+)['"]`)
	nodePort     = regexp.MustCompile(`port\s*:\s*(\d+)`)
	nodePath     = regexp.MustCompile(`path\s*:\s*['"]/drain['"]`)
	nodeMethod   = regexp.MustCompile(`method\s*:\s*['"]POST['"]`)
	nodeTimeout  = regexp.MustCompile(`timeout\s*:\s*(\d+)`)
	postInURLCmd = regexp.MustCompile(`-X\s*POST|--request[= ]POST|--post-data|--data|-d\s`)
)

// TestDrainPreStop: next to a sidecar chatguard, every other container gets
// a preStop hook that POSTs to chatguard's /drain on the loopback address
// (which needs no token) at the admin port chatguard listens on, and waits
// long enough for the drain but less than the grace period.
func TestDrainPreStop(t *testing.T) {
	t.Parallel()
	eachConfigured(t, func(t *testing.T, w *workload, cg container, cfg *config.Config, docs []*doc) {
		adminPort := listenPort(cfg.AdminListen)
		if cp, ok := containerPort(cg.Container, intstr.FromString(adminPortName)); !ok || int(cp.ContainerPort) != adminPort {
			t.Errorf("%s: chatguard's %s port is not %d, where it listens", w, adminPortName, adminPort)
		}
		drain := cfg.Server.DrainDelay + cfg.Server.ShutdownTimeout
		for _, c := range containers(&w.pod.Spec) {
			if c.init || isProxy(c.Container) {
				continue
			}
			if err := checkDrainHook(c.Lifecycle, adminPort, drain, w.pod.Spec.TerminationGracePeriodSeconds); err != nil {
				t.Errorf("%s: container %q: %v", w, c.Name, err)
			}
		}
	})
}

func checkDrainHook(l *corev1.Lifecycle, adminPort int, drain time.Duration, graceSeconds *int64) error {
	if l == nil || l.PreStop == nil {
		return fmt.Errorf("no preStop hook: it gets SIGTERM while chatguard still sends it requests")
	}
	h := l.PreStop
	if h.Exec == nil {
		return fmt.Errorf("preStop must be exec: httpGet sends GET, and /drain takes POST")
	}
	cmd := strings.Join(h.Exec.Command, " ")
	var host, port string
	switch {
	case drainURL.MatchString(cmd):
		m := drainURL.FindStringSubmatch(cmd)
		host, port = m[1], m[2]
		if !postInURLCmd.MatchString(cmd) {
			return fmt.Errorf("preStop %q does not POST", cmd)
		}
	case nodePath.MatchString(cmd):
		if hm, pm := nodeHost.FindStringSubmatch(cmd), nodePort.FindStringSubmatch(cmd); hm != nil && pm != nil {
			host, port = hm[1], pm[1]
		}
		if !nodeMethod.MatchString(cmd) {
			return fmt.Errorf("preStop %q does not POST", cmd)
		}
	default:
		return fmt.Errorf("preStop %q does not call chatguard's /drain", cmd)
	}
	if host != "127.0.0.1" && host != "localhost" && host != "::1" {
		return fmt.Errorf("preStop calls /drain on %q; only a loopback address needs no token", host)
	}
	if port != strconv.Itoa(adminPort) {
		return fmt.Errorf("preStop calls /drain on port %s; chatguard's admin listener is on %d", port, adminPort)
	}
	if m := nodeTimeout.FindStringSubmatch(cmd); m != nil {
		ms, _ := strconv.Atoi(m[1])
		timeout := time.Duration(ms) * time.Millisecond
		grace := 30 * time.Second
		if graceSeconds != nil {
			grace = time.Duration(*graceSeconds) * time.Second
		}
		if timeout < drain || timeout >= grace {
			return fmt.Errorf("preStop waits %s for /drain; want between the drain (%s) and the grace period (%s)", timeout, drain, grace)
		}
	}
	return nil
}

// TestReplicas: CHATGUARD_REPLICAS (redis.replicas) equals the number of
// replicas, since while Redis is down each enforces that share of every limit;
// an HPA that could change the count breaks that, unless it is pinned.
func TestReplicas(t *testing.T) {
	t.Parallel()
	eachConfigured(t, func(t *testing.T, w *workload, c container, cfg *config.Config, docs []*doc) {
		if w.replicas == nil {
			return
		}
		if cfg.Redis.Replicas != int(*w.replicas) {
			t.Errorf("%s: %d replicas, but CHATGUARD_REPLICAS (redis.replicas) is %d", w, *w.replicas, cfg.Redis.Replicas)
		}
		if *w.replicas > 1 && !envSet(c.Container, "REDIS_URL") {
			t.Errorf("%s: %d replicas and no REDIS_URL: each enforces the whole limit on its own", w, *w.replicas)
		}
		for d, hpa := range all[*autoscalingv2.HorizontalPodAutoscaler](docs) {
			ref := hpa.Spec.ScaleTargetRef
			if d.Namespace != w.doc.Namespace || ref.Kind != w.doc.Kind || ref.Name != w.doc.Name {
				continue
			}
			if hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas != hpa.Spec.MaxReplicas || int(hpa.Spec.MaxReplicas) != cfg.Redis.Replicas {
				t.Errorf("%s scales %s, whose CHATGUARD_REPLICAS is fixed at %d: the fallback share would be wrong", d, w, cfg.Redis.Replicas)
			}
		}
	})
}

// TestDisruptionBudgets: a PDB selects a workload of its directory and leaves
// room for one eviction; every replicated chatguard gateway has one.
func TestDisruptionBudgets(t *testing.T) {
	t.Parallel()
	load(t).eachDir(t, func(t *testing.T, docs []*doc) {
		covered := map[*workload]bool{}
		ws := workloads(docs)
		for d, pdb := range all[*policyv1.PodDisruptionBudget](docs) {
			sel := labelSelector(pdb.Spec.Selector)
			n := 0
			for _, w := range ws {
				if !w.selectedBy(d.Namespace, sel) {
					continue
				}
				n++
				covered[w] = true
				if w.replicas != nil && pdb.Spec.MinAvailable != nil && pdb.Spec.MinAvailable.Type == intstr.Int && pdb.Spec.MinAvailable.IntVal >= *w.replicas {
					t.Errorf("%s: minAvailable %d with %d replicas of %s: no pod could ever be evicted", d, pdb.Spec.MinAvailable.IntVal, *w.replicas, w)
				}
			}
			if n == 0 {
				t.Errorf("%s: selector %v matches no workload in %s", d, sel, d.Dir())
			}
		}
		for _, w := range ws {
			if _, ok := proxyOf(w); ok && w.replicas != nil && *w.replicas > 1 && !covered[w] {
				t.Errorf("%s: %d chatguard replicas and no PodDisruptionBudget", w, *w.replicas)
			}
		}
	})
}
