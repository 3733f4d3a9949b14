package kubernetes_test

import (
	"slices"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// maxWebhookTimeout bounds an admission webhook's timeout: every pod creation
// in the selected namespaces waits for it.
const maxWebhookTimeout = 10 * time.Second

// TestWebhookConfigurations: an admission webhook has no side effects, a
// short timeout, speaks AdmissionReview v1, calls a Service of its directory
// on a port that Service has, and never applies to its own namespace (its
// pods could not be created while it is down) or to kube-system.
func TestWebhookConfigurations(t *testing.T) {
	t.Parallel()
	load(t).eachDir(t, func(t *testing.T, docs []*doc) {
		nsLabels := namespaceLabels(docs)
		check := func(d *doc, name string, se *admissionregistrationv1.SideEffectClass, timeout *int32,
			versions []string, cc admissionregistrationv1.WebhookClientConfig, nsSel *metav1.LabelSelector) {
			if se == nil || (*se != admissionregistrationv1.SideEffectClassNone && *se != admissionregistrationv1.SideEffectClassNoneOnDryRun) {
				t.Errorf("%s: webhook %s: sideEffects must be None", d, name)
			}
			if timeout == nil || time.Duration(*timeout)*time.Second > maxWebhookTimeout {
				t.Errorf("%s: webhook %s: timeoutSeconds must be set and at most %s", d, name, maxWebhookTimeout)
			}
			if !slices.Contains(versions, "v1") {
				t.Errorf("%s: webhook %s: admissionReviewVersions %v lacks v1", d, name, versions)
			}
			ref := cc.Service
			if ref == nil {
				return // a URL: nothing in the directory to check against
			}
			svc, ok := findObject[*corev1.Service](docs, ref.Namespace, ref.Name)
			if !ok {
				t.Errorf("%s: webhook %s calls Service %s/%s, which %s does not define", d, name, ref.Namespace, ref.Name, d.Dir())
				return
			}
			port := int32(443)
			if ref.Port != nil {
				port = *ref.Port
			}
			if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == port }) {
				t.Errorf("%s: webhook %s calls port %d of Service %s/%s, which has no such port", d, name, port, ref.Namespace, ref.Name)
			}
			sel := labels.Everything() // no namespaceSelector: every namespace
			if nsSel != nil {
				sel = labelSelector(nsSel)
			}
			for _, ns := range []string{ref.Namespace, "kube-system"} {
				if sel.Matches(nsLabels(ns)) {
					t.Errorf("%s: webhook %s applies to namespace %s; exclude it with namespaceSelector", d, name, ns)
				}
			}
		}
		for d, c := range all[*admissionregistrationv1.MutatingWebhookConfiguration](docs) {
			for _, w := range c.Webhooks {
				check(d, w.Name, w.SideEffects, w.TimeoutSeconds, w.AdmissionReviewVersions, w.ClientConfig, w.NamespaceSelector)
			}
		}
		for d, c := range all[*admissionregistrationv1.ValidatingWebhookConfiguration](docs) {
			for _, w := range c.Webhooks {
				check(d, w.Name, w.SideEffects, w.TimeoutSeconds, w.AdmissionReviewVersions, w.ClientConfig, w.NamespaceSelector)
			}
		}
	})
}
