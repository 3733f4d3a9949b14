package inject

import (
	"fmt"
	"strconv"
)

// Mode is the form the sidecar takes in the pod spec.
type Mode string

const (
	// ModeNative puts chatguard first in initContainers with restartPolicy
	// Always (Kubernetes 1.29+ sidecars): it starts before the app, is ready
	// before the app starts, and stops after it.
	ModeNative Mode = "native"
	// ModeClassic appends chatguard to containers, for clusters without
	// native sidecars. In a Job it keeps the pod running after the app ends.
	ModeClassic Mode = "classic"
)

// DefaultImage is the chatguard image injected when Options.Image is empty.
const DefaultImage = "ghcr.io/chatguard/chatguard:0.1.0"

// DefaultUpstreamPort is the app's port when no container declares one.
const DefaultUpstreamPort = 3000

// Options control a transform. The zero value injects the native form.
type Options struct {
	// Mode is the sidecar's form; "" means ModeNative.
	Mode Mode
	// Image is chatguard's image; "" means DefaultImage.
	Image string
	// UpstreamPort is the app's port, which chatguard forwards to; 0 means
	// the first app container's first containerPort, else DefaultUpstreamPort.
	UpstreamPort int
	// Uninject removes what an injection added instead of adding it.
	Uninject bool
	// KeepServices leaves Services as they are: the first step of
	// injecting a running app, whose old pods have no port named chatguard
	// (a Service pointed there at once would have no endpoints on them).
	KeepServices bool

	replicas int // the workload's, for CHATGUARD_REPLICAS (set per workload)
	// modeAsked: Mode was given, not defaulted; a pod injected in the other
	// form then gets a warning.
	modeAsked bool
}

// withDefaults fills the defaults and validates what was given.
func (o Options) withDefaults() (Options, error) {
	o.modeAsked = o.Mode != ""
	if o.Mode == "" {
		o.Mode = ModeNative
	}
	if o.Mode != ModeNative && o.Mode != ModeClassic {
		return o, fmt.Errorf("inject: mode %q: want %q or %q", o.Mode, ModeNative, ModeClassic)
	}
	if o.Image == "" {
		o.Image = DefaultImage
	}
	if o.UpstreamPort < 0 || o.UpstreamPort > 65535 {
		return o, fmt.Errorf("inject: upstream port %d: want 1-65535 (0 = detect)", o.UpstreamPort)
	}
	if isChatguardPort(o.UpstreamPort) {
		return o, fmt.Errorf("inject: upstream port %d is one chatguard listens on", o.UpstreamPort)
	}
	return o, nil
}

// What the sidecar is made of (the deployment contract).
const (
	containerName  = "chatguard"
	publicPortName = "chatguard"
	adminPortName  = "chatguard-admin"
	publicPort     = 8080
	adminPort      = 9090
	dataVolume     = "chatguard-data"
	dataPath       = "/var/lib/chatguard"
	configVolume   = "chatguard-config"
	configMapName  = "chatguard-config"
	configPath     = "/etc/chatguard"
	secretName     = "chatguard-secrets"
	minGracePeriod = 45 // drain delay 5 s + shutdown timeout 20 s + margin, rounded up
	injectedValue  = "true"
	graceUnset     = "unset"
)

func isChatguardPort(p int) bool { return p == publicPort || p == adminPort }

// upstreamURL is CHATGUARD_UPSTREAM for an app on port.
func upstreamURL(port int) string { return "http://127.0.0.1:" + strconv.Itoa(port) }
