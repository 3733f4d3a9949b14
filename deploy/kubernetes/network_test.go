package kubernetes_test

import (
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TestNetworkPolicies: a policy selects pods of its directory, and admits
// only ports those pods declare. Around chatguard the policy is the point:
// every chatguard pod is selected by an ingress policy whose rules each name
// their ports, admitting its public port, its admin port only from selected
// peers, and no port of another container (in a sidecar pod, the app's port
// is reached over loopback only). A chatguard pod under an egress policy may
// still reach DNS, its upstream's pods and Redis.
func TestNetworkPolicies(t *testing.T) {
	t.Parallel()
	load(t).eachDir(t, func(t *testing.T, docs []*doc) {
		ws := workloads(docs)
		nsLabels := namespaceLabels(docs)
		admitted := map[*workload]map[string]bool{} // chatguard pod → its port names admitted from outside
		for d, np := range all[*networkingv1.NetworkPolicy](docs) {
			sel := labelSelector(&np.Spec.PodSelector)
			var selected []*workload
			for _, w := range ws {
				if w.selectedBy(d.Namespace, sel) {
					selected = append(selected, w)
				}
			}
			if len(selected) == 0 {
				t.Errorf("%s: podSelector %v matches no workload in %s", d, sel, d.Dir())
			}
			types := policyTypes(np)
			for _, w := range selected {
				if _, ok := proxyOf(w); ok && slices.Contains(types, networkingv1.PolicyTypeIngress) && admitted[w] == nil {
					admitted[w] = map[string]bool{}
				}
			}
			for i, rule := range np.Spec.Ingress {
				checkIngressRule(t, d, i, rule, selected, admitted)
			}
			if !slices.Contains(types, networkingv1.PolicyTypeEgress) {
				continue
			}
			for _, w := range selected {
				if c, ok := proxyOf(w); ok {
					checkChatguardEgress(t, d, np, w, c.Container, docs, ws, nsLabels)
				}
			}
		}
		for _, w := range ws {
			if _, ok := proxyOf(w); !ok {
				continue
			}
			switch {
			case admitted[w] == nil:
				t.Errorf("%s: no NetworkPolicy of %s restricts ingress to this chatguard pod", w, w.doc.Dir())
			case !admitted[w][chatguardName]:
				t.Errorf("%s: no NetworkPolicy rule admits chatguard's public port", w)
			}
		}
	})
}

func checkIngressRule(t *testing.T, d *doc, i int, rule networkingv1.NetworkPolicyIngressRule, selected []*workload, admitted map[*workload]map[string]bool) {
	t.Helper()
	guarded := slices.ContainsFunc(selected, func(w *workload) bool { return admitted[w] != nil })
	if len(rule.Ports) == 0 {
		if guarded {
			t.Errorf("%s: ingress[%d] names no ports, so it admits every port of chatguard's pods", d, i)
		}
		return
	}
	restricted := len(rule.From) > 0 && !slices.ContainsFunc(rule.From, func(p networkingv1.NetworkPolicyPeer) bool {
		return p.IPBlock != nil || (p.NamespaceSelector == nil && p.PodSelector == nil)
	})
	for _, p := range rule.Ports {
		if p.Port == nil {
			if guarded {
				t.Errorf("%s: ingress[%d] admits every %s port of chatguard's pods", d, i, proto(ptrOr(p.Protocol)))
			}
			continue
		}
		found := false
		for _, w := range selected {
			c, cp, ok := podPort(&w.pod.Spec, *p.Port)
			if !ok || proto(cp.Protocol) != proto(ptrOr(p.Protocol)) {
				continue
			}
			found = true
			if admitted[w] == nil {
				continue // not a chatguard pod
			}
			switch {
			case !isProxy(c.Container):
				t.Errorf("%s: ingress[%d] admits port %s of container %q of %s; from outside the pod only chatguard may be reached", d, i, p.Port, c.Name, w)
			case cp.Name == adminPortName && !restricted:
				t.Errorf("%s: ingress[%d] admits chatguard's admin port (metrics, stats, drain) from anywhere; name the monitoring peers", d, i)
			default:
				admitted[w][cp.Name] = true
			}
		}
		if !found {
			t.Errorf("%s: ingress[%d] admits port %s, which no selected pod declares", d, i, p.Port)
		}
	}
}

func ptrOr[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

// policyTypes applies the API's default: Ingress, plus Egress when the
// policy has egress rules.
func policyTypes(np *networkingv1.NetworkPolicy) []networkingv1.PolicyType {
	if len(np.Spec.PolicyTypes) > 0 {
		return np.Spec.PolicyTypes
	}
	types := []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}
	if len(np.Spec.Egress) > 0 {
		types = append(types, networkingv1.PolicyTypeEgress)
	}
	return types
}

// namespaceLabels gives a namespace's labels: the automatic
// kubernetes.io/metadata.name, plus those of its Namespace object, if defined.
func namespaceLabels(docs []*doc) func(string) labels.Set {
	return func(ns string) labels.Set {
		set := labels.Set{"kubernetes.io/metadata.name": ns}
		if n, ok := findObject[*corev1.Namespace](docs, "", ns); ok {
			for k, v := range n.Labels {
				set[k] = v
			}
		}
		return set
	}
}

func checkChatguardEgress(t *testing.T, d *doc, np *networkingv1.NetworkPolicy, w *workload, c *corev1.Container, docs []*doc, ws []*workload, nsLabels func(string) labels.Set) {
	t.Helper()
	anyPeer := func(*networkingv1.NetworkPolicyPeer) bool { return true }
	for _, p := range []corev1.Protocol{corev1.ProtocolUDP, corev1.ProtocolTCP} {
		if !egressAllows(np, anyPeer, 53, "", p) {
			t.Errorf("%s: chatguard pods of %s cannot reach DNS (port 53/%s)", d, w, p)
		}
	}
	if envSet(c, "REDIS_URL") {
		port := redisPort(w, c, docs)
		if !egressAllows(np, anyPeer, port, "", corev1.ProtocolTCP) {
			t.Errorf("%s: %s sets REDIS_URL, but its pods cannot reach port %d", d, w, port)
		}
	}
	cfg, err := chatguardConfig(w, c, docs)
	if err != nil {
		return
	}
	svc, port, ok := upstreamService(cfg.Upstream, w.doc.Namespace, docs)
	if !ok {
		t.Logf("%s: upstream %s is no Service of %s; its egress is not checked", d, cfg.Upstream, d.Dir())
		return
	}
	sel := labels.SelectorFromSet(svc.Spec.Selector)
	for _, target := range ws {
		if !target.selectedBy(svc.Namespace, sel) {
			continue
		}
		_, cp, ok := podPort(&target.pod.Spec, port)
		if !ok {
			continue // TestServicesSelectPods reports it
		}
		peer := func(p *networkingv1.NetworkPolicyPeer) bool { return peerSelects(p, d.Namespace, target, nsLabels) }
		if !egressAllows(np, peer, cp.ContainerPort, cp.Name, proto(cp.Protocol)) {
			t.Errorf("%s: chatguard (%s) cannot reach its upstream %s: no egress rule admits %s's pods on port %d", d, w, cfg.Upstream, target, cp.ContainerPort)
		}
	}
}

// upstreamService finds the Service of the directory an upstream URL names
// (name, name.ns, name.ns.svc, name.ns.svc.cluster.local) and the target port
// its URL's port leads to.
func upstreamService(upstream, ns string, docs []*doc) (*corev1.Service, intstr.IntOrString, bool) {
	u, err := url.Parse(upstream)
	if err != nil || net.ParseIP(u.Hostname()) != nil || u.Hostname() == "localhost" {
		return nil, intstr.IntOrString{}, false
	}
	parts := strings.SplitN(u.Hostname(), ".", 3)
	if len(parts) > 1 {
		ns = parts[1]
	}
	if len(parts) == 3 && parts[2] != "svc" && parts[2] != "svc.cluster.local" {
		return nil, intstr.IntOrString{}, false
	}
	svc, ok := findObject[*corev1.Service](docs, ns, parts[0])
	if !ok {
		return nil, intstr.IntOrString{}, false
	}
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443"}[u.Scheme]
	}
	for _, p := range svc.Spec.Ports {
		if strconv.Itoa(int(p.Port)) == port {
			if p.TargetPort.Type == intstr.Int && p.TargetPort.IntVal == 0 {
				return svc, intstr.FromInt32(p.Port), true
			}
			return svc, p.TargetPort, true
		}
	}
	return nil, intstr.IntOrString{}, false
}

// redisPort is the port of the REDIS_URL placeholder in the directory's
// Secret, or Redis's default.
func redisPort(w *workload, c *corev1.Container, docs []*doc) int32 {
	for _, e := range c.Env {
		if e.Name != "REDIS_URL" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
			continue
		}
		ref := e.ValueFrom.SecretKeyRef
		if s, ok := findObject[*corev1.Secret](docs, w.doc.Namespace, ref.Name); ok {
			if u, err := url.Parse(s.StringData[ref.Key]); err == nil && u.Port() != "" {
				n, _ := strconv.Atoi(u.Port())
				return int32(n)
			}
		}
	}
	return 6379
}

// egressAllows reports whether a rule of np admits traffic to a peer that
// accepts says yes to, on the given port (number, and name when the
// destination pod names it).
func egressAllows(np *networkingv1.NetworkPolicy, accepts func(*networkingv1.NetworkPolicyPeer) bool, port int32, name string, protocol corev1.Protocol) bool {
	for _, rule := range np.Spec.Egress {
		if len(rule.To) > 0 && !slices.ContainsFunc(rule.To, func(p networkingv1.NetworkPolicyPeer) bool { return accepts(&p) }) {
			continue
		}
		if len(rule.Ports) == 0 {
			return true
		}
		for _, p := range rule.Ports {
			if proto(ptrOr(p.Protocol)) != protocol {
				continue
			}
			switch {
			case p.Port == nil,
				p.Port.Type == intstr.String && name != "" && p.Port.StrVal == name,
				p.Port.Type == intstr.Int && p.Port.IntVal == port,
				p.Port.Type == intstr.Int && p.EndPort != nil && p.Port.IntVal <= port && port <= *p.EndPort:
				return true
			}
		}
	}
	return false
}

// peerSelects reports whether a peer of a policy in namespace ns selects w's pods.
func peerSelects(p *networkingv1.NetworkPolicyPeer, ns string, w *workload, nsLabels func(string) labels.Set) bool {
	if p.IPBlock != nil {
		return false // pod addresses are not known offline
	}
	if p.NamespaceSelector == nil {
		if w.doc.Namespace != ns {
			return false
		}
	} else if !labelSelector(p.NamespaceSelector).Matches(nsLabels(w.doc.Namespace)) {
		return false
	}
	return p.PodSelector == nil || labelSelector(p.PodSelector).Matches(labels.Set(w.pod.Labels))
}
