package inject

import (
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	"strconv"
	"strings"
)

// drainScript asks chatguard to drain and waits for the answer; the app is
// Node.js, so node is in its image. Failure to reach chatguard must not block
// the app's shutdown, so every outcome exits 0.
const drainScript = "require('http').request({host:'127.0.0.1',port:9090,path:'/drain',method:'POST',timeout:40000}," +
	"r=>{r.resume();r.on('end',()=>process.exit(0))}).on('error',()=>process.exit(0)).end()"

// drainHook is the preStop hook chatguard gives an app container, node
// being how it starts Node.js there (see nodeFor).
func drainHook(node string) *corev1.LifecycleHandler {
	return &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{node, "-e", drainScript}}}
}

// nodeFor is how the hook starts node in c: the absolute path c's own
// command starts node by, if it does (an image built FROM a distroless
// one, whose name says nothing: review); else nodeBinary of its image.
func nodeFor(c corev1.Container) string {
	if len(c.Command) > 0 && strings.HasPrefix(c.Command[0], "/") && strings.HasSuffix(c.Command[0], "/node") {
		return c.Command[0]
	}
	return nodeBinary(c.Image)
}

// nodeBinary is how the hook starts node in image: by name, except in
// Google's distroless Node.js images, which have no PATH to find it on
// and keep it at /nodejs/bin/node (QA: the hook failed to start there, and
// the app stopped before chatguard had drained).
func nodeBinary(image string) string {
	repo, _, _ := strings.Cut(image, "@")
	if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
		repo = repo[:i] // the tag; a registry's port comes before a slash
	}
	if strings.Contains(repo, "distroless/nodejs") {
		return "/nodejs/bin/node"
	}
	return "node"
}

// sidecar is the chatguard container for an app listening on upstreamPort.
func sidecar(o Options, upstreamPort int) corev1.Container {
	get := func(path string) corev1.ProbeHandler {
		return corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromString(adminPortName)}}
	}
	c := corev1.Container{
		Name:  containerName,
		Image: o.Image,
		Ports: []corev1.ContainerPort{
			{Name: publicPortName, ContainerPort: publicPort, Protocol: corev1.ProtocolTCP},
			{Name: adminPortName, ContainerPort: adminPort, Protocol: corev1.ProtocolTCP},
		},
		Env: []corev1.EnvVar{
			{Name: "CHATGUARD_UPSTREAM", Value: upstreamURL(upstreamPort)},
			// Not ready while the app does not accept connections: an app
			// with no probe of its own took traffic while it booted (QA).
			{Name: "CHATGUARD_READY_ON_UPSTREAM", Value: "true"},
			{Name: "CHATGUARD_CONFIG", Value: configPath + "/chatguard.yaml"},
			{Name: "CHATGUARD_RATE_LIMIT_FILE", Value: dataPath + "/rate-limits.json"},
			{Name: "CHATGUARD_PROFILE_DIR", Value: dataPath + "/profiles"},
			{Name: "LOG_DIR", Value: dataPath + "/logs"},
			{Name: "CHATGUARD_ALERT_PATH", Value: dataPath + "/logs/alerts.jsonl"},
			secretEnv("CHATGUARD_STATS_TOKEN", "stats-token"),
			secretEnv("CHATGUARD_JWT_SECRET", "jwt-secret"),
			secretEnv("REDIS_URL", "redis-url"),
		},
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{
				corev1.ResourceCPU:    resource.MustParse("50m"),
				corev1.ResourceMemory: resource.MustParse("64Mi"),
			},
			Limits: corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("256Mi")},
		},
		VolumeMounts: []corev1.VolumeMount{
			{Name: dataVolume, MountPath: dataPath},
			{Name: configVolume, MountPath: configPath, ReadOnly: true},
		},
		// Out of the endpoints within 4 s of a drain, inside the 5 s drain
		// delay (the default 10 s x 3 took up to 30 s).
		ReadinessProbe: &corev1.Probe{ProbeHandler: get("/readyz"), PeriodSeconds: 2, FailureThreshold: 2},
		LivenessProbe:  &corev1.Probe{ProbeHandler: get("/healthz")},
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             new(true),
			RunAsUser:                new(int64(65532)),
			RunAsGroup:               new(int64(65532)),
			ReadOnlyRootFilesystem:   new(true),
			AllowPrivilegeEscalation: new(false),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
	}
	if o.replicas > 1 {
		c.Env = append(c.Env, corev1.EnvVar{Name: "CHATGUARD_REPLICAS", Value: strconv.Itoa(o.replicas)})
	}
	if o.Mode == ModeNative {
		c.RestartPolicy = new(corev1.ContainerRestartPolicyAlways)
		// The kubelet starts the app only once this succeeds: /healthz,
		// chatguard is up; /readyz waits for the app, which would wait for
		// this probe.
		c.StartupProbe = &corev1.Probe{ProbeHandler: get("/healthz"), PeriodSeconds: 1, FailureThreshold: 30}
	}
	return c
}

// secretEnv reads a key of chatguard's Secret. Every key is optional: a
// pod injected into a namespace without the Secret must still start (no
// stats token: the stats endpoint answers 401; no JWT secret: users are not
// identified; no Redis URL: limits live in memory).
func secretEnv(name, key string) corev1.EnvVar {
	ref := &corev1.SecretKeySelector{LocalObjectReference: corev1.LocalObjectReference{Name: secretName}, Key: key, Optional: new(true)}
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{SecretKeyRef: ref}}
}

// volumes are the pod volumes the sidecar mounts: a bounded scratch
// directory for everything it writes (its root filesystem is read-only) and
// its config. The ConfigMap is required: CHATGUARD_CONFIG names its file,
// and chatguard refuses to start on a named file that is missing, so an
// optional one would crash-loop where a required one makes the kubelet wait,
// with an event that names the missing ConfigMap (an empty chatguard.yaml
// is valid: the defaults).
func volumes() []corev1.Volume {
	limit := resource.MustParse("256Mi")
	return []corev1.Volume{
		{Name: dataVolume, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: &limit}}},
		{Name: configVolume, VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: configMapName},
		}}},
	}
}

// scrapeAnnotations let annotation-based Prometheus scraping find chatguard's metrics.
var scrapeAnnotations = map[string]string{
	"prometheus.io/scrape": "true",
	"prometheus.io/port":   "9090",
	"prometheus.io/path":   "/metrics",
}
