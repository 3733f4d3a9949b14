package inject

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"

	"github.com/chatguard/chatguard/internal/testnet"
)

// webhookServer is ServeTLS running on a loopback port with a fresh
// self-signed certificate, and a client that trusts it.
type webhookServer struct {
	url    string
	client *http.Client
	pool   *x509.CertPool
}

func startWebhook(t *testing.T, o Options) *webhookServer {
	t.Helper()
	wh, err := NewWebhook(o, nil)
	if err != nil {
		t.Fatal(err)
	}
	addr, pool, cancel, done := runWebhook(t, wh)
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}
	t.Cleanup(func() {
		tr.CloseIdleConnections()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeTLS: %v", err)
		}
	})
	return &webhookServer{url: "https://" + addr, client: &http.Client{Transport: tr, Timeout: 10 * time.Second}, pool: pool}
}

// runWebhook runs wh's ServeTLS on a loopback port with a fresh self-signed
// certificate: cancel stops it, done gives ServeTLS's result.
func runWebhook(t *testing.T, wh *Webhook) (addr string, pool *x509.CertPool, cancel func(), done <-chan error) {
	t.Helper()
	certFile, keyFile, pool := testnet.SelfSigned(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	result := make(chan error, 1)
	go func() { result <- wh.ServeTLS(ctx, l, certFile, keyFile) }()
	return l.Addr().String(), pool, cancel, result
}

// post sends body to /mutate and returns the status and the decoded review.
func (s *webhookServer) post(t *testing.T, contentType string, body []byte) (int, *admissionv1.AdmissionReview) {
	t.Helper()
	resp, err := s.client.Post(s.url+"/mutate", contentType, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, nil
	}
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("answer: %v: %s", err, b)
	}
	return resp.StatusCode, &out
}

// reviewOf wraps an object in an AdmissionReview request.
func reviewOf(t *testing.T, kind metav1.GroupVersionKind, op admissionv1.Operation, obj []byte) []byte {
	t.Helper()
	b, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID: types.UID("705ab4f5-6393-11e8-b7cc-42010a800002"), Kind: kind, Operation: op,
			Namespace: "chat", Object: runtime.RawExtension{Raw: obj},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

var podKind = metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}

// testPods are pods made of every workload's pod template in testdata.
func testPods(t *testing.T) map[string]map[string]any {
	t.Helper()
	ins, _ := filepath.Glob("testdata/*.in.*")
	pods := map[string]map[string]any{}
	for _, in := range ins {
		src, err := os.ReadFile(in)
		if err != nil {
			t.Fatal(err)
		}
		var objs []object
		var errs []error
		for _, d := range decodeAll(t, src) {
			objs, errs = flatten(objs, errs, in, d)
		}
		for _, ob := range objs {
			wk, ok := workloadKindOf(ob.m)
			if !ok {
				continue
			}
			pt, err := openPodTemplate(ob.m, wk)
			if err != nil {
				t.Fatal(err)
			}
			meta, _ := child(pt.parent, "metadata", false)
			if meta == nil {
				meta = map[string]any{}
			}
			meta["generateName"] = nameOf(ob.m) + "-"
			pods[ob.where] = map[string]any{"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": pt.spec}
		}
	}
	if len(pods) < 10 {
		t.Fatalf("only %d pods", len(pods))
	}
	return pods
}

func annotate(t *testing.T, pod map[string]any, kv ...string) []byte {
	t.Helper()
	b, _ := json.Marshal(pod)
	var cp map[string]any
	_ = json.Unmarshal(b, &cp)
	ann, _ := annotationsOf(cp, true)
	for i := 0; i+1 < len(kv); i += 2 {
		ann[kv[i]] = kv[i+1]
	}
	b, err := json.Marshal(cp)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// The webhook's patch applied to a pod gives what the CLI makes of that pod.
func TestWebhookParity(t *testing.T) {
	t.Parallel()
	s := startWebhook(t, Options{})
	for where, pod := range testPods(t) {
		for _, mode := range []Mode{ModeNative, ModeClassic} {
			raw := annotate(t, pod, AnnotationInject, "enabled", AnnotationMode, string(mode))
			code, review := s.post(t, "application/json", reviewOf(t, podKind, admissionv1.Create, raw))
			if a, _ := annotationsOf(pod, false); a[AnnotationInjected] != nil {
				if code != 200 || !review.Response.Allowed || review.Response.Patch != nil {
					t.Errorf("%s %s: an injected pod was patched: %d %+v", where, mode, code, review)
				}
				continue
			}
			if code != 200 || !review.Response.Allowed || review.Response.PatchType == nil || *review.Response.PatchType != admissionv1.PatchTypeJSONPatch {
				t.Fatalf("%s %s: %d %+v", where, mode, code, review)
			}
			patch, err := jsonpatch.DecodePatch(review.Response.Patch)
			if err != nil {
				t.Fatal(err)
			}
			patched, err := patch.Apply(raw)
			if err != nil {
				t.Fatalf("%s %s: applying the patch: %v", where, mode, err)
			}
			cli := mustTransform(t, raw, Options{Mode: mode})
			want, have := decodeAll(t, cli.Manifests), decodeAll(t, patched)
			if !equalJSON(want, have) {
				t.Errorf("%s %s: webhook and CLI differ:\npatched: %s\ncli: %s", where, mode, patched, cli.Manifests)
			}
			if err := checkPodSpec(have[0]["spec"].(map[string]any), mode); err != nil {
				t.Errorf("%s %s: %v", where, mode, err)
			}
			// The pod as admitted comes back unpatched: injection is idempotent.
			if _, again := s.post(t, "application/json", reviewOf(t, podKind, admissionv1.Create, patched)); again.Response.Patch != nil {
				t.Errorf("%s %s: injected pod patched again: %s", where, mode, again.Response.Patch)
			}
		}
	}
}

func TestWebhookReviews(t *testing.T) {
	t.Parallel()
	s := startWebhook(t, Options{Mode: ModeClassic})
	pod := map[string]any{"apiVersion": "v1", "kind": "Pod", "metadata": map[string]any{"name": "p"},
		"spec": map[string]any{"containers": []any{map[string]any{"name": "app", "image": "x"}}}}
	enabled := annotate(t, pod, AnnotationInject, "enabled")
	for _, tc := range []struct {
		name    string
		kind    metav1.GroupVersionKind
		op      admissionv1.Operation
		obj     []byte
		patched bool
		warning string
	}{
		{"opted in", podKind, admissionv1.Create, enabled, true, ""},
		{"no annotation", podKind, admissionv1.Create, annotate(t, pod), false, ""},
		{"disabled", podKind, admissionv1.Create, annotate(t, pod, AnnotationInject, "disabled"), false, ""},
		{"another injector's spelling", podKind, admissionv1.Create, annotate(t, pod, AnnotationInject, "true"), false, `chatguard not injected: chatguard.io/inject is "true"; the value that opts a pod in is "enabled"`},
		{"update", podKind, admissionv1.Update, enabled, false, ""},
		{"a Deployment", metav1.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}, admissionv1.Create, enabled, false, ""},
		{"a ConfigMap", metav1.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}, admissionv1.Create, []byte(`{"kind":"ConfigMap"}`), false, ""},
		{"bad mode", podKind, admissionv1.Create, annotate(t, pod, AnnotationInject, "enabled", AnnotationMode, "sideways"), false, `chatguard not injected: annotation chatguard.io/mode: "sideways"`},
		{"bad pod", podKind, admissionv1.Create, []byte(`{"kind":"Pod","metadata":{"annotations":{"chatguard.io/inject":"enabled"}},"spec":{"containers":"x"}}`), false, "chatguard not injected: pod spec:"},
		{"not JSON", podKind, admissionv1.Create, []byte(`"just a string"`), false, "chatguard not injected: decoding the pod"},
		{"no object", podKind, admissionv1.Create, nil, false, "chatguard not injected"},
		{"own preStop", podKind, admissionv1.Create, []byte(`{"kind":"Pod","metadata":{"annotations":{"chatguard.io/inject":"enabled"}},` +
			`"spec":{"containers":[{"name":"app","image":"x","lifecycle":{"preStop":{"exec":{"command":["true"]}}}}]}}`), true, `container "app" has a preStop hook of its own`},
	} {
		code, review := s.post(t, "application/json; charset=utf-8", reviewOf(t, tc.kind, tc.op, tc.obj))
		if code != 200 {
			t.Errorf("%s: status %d", tc.name, code)
			continue
		}
		r := review.Response
		if review.APIVersion != "admission.k8s.io/v1" || review.Kind != "AdmissionReview" || r == nil || r.UID != "705ab4f5-6393-11e8-b7cc-42010a800002" || !r.Allowed {
			t.Errorf("%s: review %+v", tc.name, review)
			continue
		}
		if (r.Patch != nil) != tc.patched || (r.PatchType != nil) != tc.patched {
			t.Errorf("%s: patch %s", tc.name, r.Patch)
		}
		if tc.warning == "" && len(r.Warnings) > 0 || tc.warning != "" && (len(r.Warnings) != 1 || !strings.Contains(r.Warnings[0], tc.warning)) {
			t.Errorf("%s: warnings %q, want %q", tc.name, r.Warnings, tc.warning)
		}
		if tc.name == "opted in" && !bytes.Contains(r.Patch, []byte(`"path":"/spec/containers/1"`)) {
			t.Errorf("the webhook's default mode (classic) was not used: %s", r.Patch)
		}
	}
}

func TestWebhookHTTP(t *testing.T) {
	t.Parallel()
	s := startWebhook(t, Options{})
	resp, err := s.client.Get(s.url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("/healthz: %d", resp.StatusCode)
	}
	for _, tc := range []struct {
		name, contentType string
		body              []byte
		want              int
	}{
		{"malformed", "application/json", []byte(`{"apiVersion":`), http.StatusBadRequest},
		{"not a review", "application/json", []byte(`{"apiVersion":"v1","kind":"Pod"}`), http.StatusBadRequest},
		{"v1beta1", "application/json", []byte(`{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"x"}}`), http.StatusBadRequest},
		{"no request", "application/json", []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`), http.StatusBadRequest},
		{"content type", "text/plain", []byte(`{}`), http.StatusUnsupportedMediaType},
		{"too large", "application/json", bytes.Repeat([]byte(" "), MaxReviewBytes+1), http.StatusRequestEntityTooLarge},
	} {
		if code, _ := s.post(t, tc.contentType, tc.body); code != tc.want {
			t.Errorf("%s: status %d, want %d", tc.name, code, tc.want)
		}
	}
	resp, err = s.client.Get(s.url + "/mutate")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("GET /mutate: %d", resp.StatusCode)
	}
	old := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: s.pool, MaxVersion: tls.VersionTLS11}}
	defer old.CloseIdleConnections()
	if _, err := (&http.Client{Transport: old}).Get(s.url + "/healthz"); err == nil {
		t.Error("TLS 1.1 accepted")
	}
}

func TestServeTLSErrors(t *testing.T) {
	t.Parallel()
	wh, err := NewWebhook(Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	err = wh.ServeTLS(context.Background(), l, "/does/not/exist.crt", "/does/not/exist.key")
	if err == nil || !strings.Contains(err.Error(), "loading the TLS key pair") {
		t.Errorf("missing key pair: %v", err)
	}
	if _, err := NewWebhook(Options{Uninject: true}, nil); err == nil {
		t.Error("an uninjecting webhook was made")
	}
	if _, err := NewWebhook(Options{Mode: "x"}, nil); err == nil {
		t.Error("a webhook with a bad mode was made")
	}
}

// After its context ends, the webhook serves DrainDelay more before it
// closes: the API server sends reviews until the endpoint leaves the
// Service, and with failurePolicy Ignore a refused one admits a pod
// without chatguard.
func TestWebhookServesDuringTheDrainDelay(t *testing.T) {
	t.Parallel()
	wh, err := NewWebhook(Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	wh.DrainDelay = 500 * time.Millisecond
	addr, pool, cancel, done := runWebhook(t, wh)
	defer cancel()
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true}
	client := &http.Client{Transport: tr, Timeout: 5 * time.Second}
	health := func() error {
		resp, err := client.Get("https://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	waitUntil := time.Now().Add(5 * time.Second)
	for health() != nil && time.Now().Before(waitUntil) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel() // SIGTERM
	time.Sleep(50 * time.Millisecond)
	if err := health(); err != nil {
		t.Errorf("a new connection during the drain delay: %v", err)
	}
	if err := <-done; err != nil {
		t.Errorf("ServeTLS: %v", err)
	}
	if err := health(); err == nil {
		t.Error("still serving after the drain delay")
	}
}
