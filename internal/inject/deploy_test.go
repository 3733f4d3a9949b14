package inject

import (
	"bytes"
	"os"
	"slices"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// The webhook's manifests call what this package serves.
func TestWebhookManifests(t *testing.T) {
	t.Parallel()
	read := func(name string, v any) {
		t.Helper()
		b, err := os.ReadFile("../../deploy/kubernetes/webhook/" + name)
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.UnmarshalStrict(b, v); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	read("mutatingwebhookconfiguration.yaml", &mwc)
	if len(mwc.Webhooks) != 1 {
		t.Fatalf("%d webhooks", len(mwc.Webhooks))
	}
	w := mwc.Webhooks[0]
	svc := w.ClientConfig.Service
	if svc == nil || svc.Path == nil || *svc.Path != "/mutate" || svc.Name != "chatguard-injector" || svc.Namespace != "chatguard-system" {
		t.Errorf("clientConfig: %+v", w.ClientConfig)
	}
	if *w.FailurePolicy != admissionregistrationv1.Ignore || *w.ReinvocationPolicy != admissionregistrationv1.NeverReinvocationPolicy ||
		*w.TimeoutSeconds != 5 || *w.SideEffects != admissionregistrationv1.SideEffectClassNone || !slices.Equal(w.AdmissionReviewVersions, []string{"v1"}) {
		t.Errorf("webhook policy: %+v", w)
	}
	if len(w.Rules) != 1 || !slices.Equal(w.Rules[0].Resources, []string{"pods"}) || !slices.Equal(w.Rules[0].Operations, []admissionregistrationv1.OperationType{admissionregistrationv1.Create}) {
		t.Errorf("rules: %+v", w.Rules)
	}
	var dep appsv1.Deployment
	read("deployment.yaml", &dep)
	if *dep.Spec.Replicas != 2 {
		t.Errorf("replicas %d", *dep.Spec.Replicas)
	}
	c := dep.Spec.Template.Spec.Containers[0]
	if !slices.Equal(c.Args[:2], []string{"inject", "--webhook"}) || !slices.Contains(c.Args, "--listen=:8443") || !slices.Contains(c.Args, "--image="+DefaultImage) || c.Image != DefaultImage {
		t.Errorf("injector args %q, image %s", c.Args, c.Image)
	}
	rp := c.ReadinessProbe
	if rp == nil || rp.HTTPGet == nil || rp.HTTPGet.Path != "/healthz" || rp.HTTPGet.Scheme != corev1.URISchemeHTTPS || c.Ports[0].ContainerPort != 8443 {
		t.Errorf("readiness probe %+v, ports %+v", rp, c.Ports)
	}
	b, _ := os.ReadFile("../../deploy/kubernetes/webhook/mutatingwebhookconfiguration.yaml")
	if !bytes.Contains(b, []byte("cert-manager.io/inject-ca-from: chatguard-system/chatguard-injector")) {
		t.Error("no note on cert-manager's inject-ca-from annotation")
	}
}
