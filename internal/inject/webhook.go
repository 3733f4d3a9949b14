package inject

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"gomodules.xyz/jsonpatch/v2"
	admissionv1 "k8s.io/api/admission/v1"
)

// MaxReviewBytes bounds an AdmissionReview body; the API server's own
// request limit is 3 MiB.
const MaxReviewBytes = 4 << 20

// Webhook is the mutating admission webhook: POST /mutate takes an
// AdmissionReview v1 and injects Pods annotated chatguard.io/inject: enabled
// (in the form chatguard.io/mode names, native by default) with the same
// transform as the CLI; GET /healthz answers 200. Every review is allowed:
// a pod that cannot be injected is admitted as it is, with a warning.
type Webhook struct {
	// DrainDelay: after ServeTLS's context ends, reviews are still served
	// this long before the listener closes (0: it closes at once).
	DrainDelay time.Duration

	opts Options
	log  *logrus.Entry
	mux  *http.ServeMux
}

// NewWebhook returns a webhook that injects with o (its Mode is only the
// default for pods without chatguard.io/mode). A nil log discards the log.
func NewWebhook(o Options, log *logrus.Entry) (*Webhook, error) {
	if o.Uninject {
		return nil, errors.New("inject: the webhook only injects")
	}
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	if log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		log = logrus.NewEntry(l)
	}
	wh := &Webhook{opts: o, log: log, mux: http.NewServeMux()}
	wh.mux.HandleFunc("POST /mutate", wh.mutate)
	wh.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok\n") })
	return wh, nil
}

func (wh *Webhook) ServeHTTP(w http.ResponseWriter, r *http.Request) { wh.mux.ServeHTTP(w, r) }

func (wh *Webhook) mutate(w http.ResponseWriter, r *http.Request) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			http.Error(w, "inject: want Content-Type application/json", http.StatusUnsupportedMediaType)
			return
		}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxReviewBytes))
	var tooBig *http.MaxBytesError
	if errors.As(err, &tooBig) {
		http.Error(w, fmt.Sprintf("inject: review larger than %d bytes", MaxReviewBytes), http.StatusRequestEntityTooLarge)
		return
	}
	if err != nil {
		http.Error(w, "inject: reading the review: "+err.Error(), http.StatusBadRequest)
		return
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil {
		http.Error(w, "inject: decoding the review: "+err.Error(), http.StatusBadRequest)
		return
	}
	if review.APIVersion != admissionv1.SchemeGroupVersion.String() || review.Kind != "AdmissionReview" || review.Request == nil {
		http.Error(w, "inject: want an admission.k8s.io/v1 AdmissionReview with a request", http.StatusBadRequest)
		return
	}
	out := admissionv1.AdmissionReview{TypeMeta: review.TypeMeta, Response: wh.review(review.Request)}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(&out)
}

// review decides on one request. It always allows.
func (wh *Webhook) review(req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	resp := &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}
	log := wh.log.WithFields(logrus.Fields{"uid": req.UID, "namespace": req.Namespace, "name": req.Name})
	if req.Kind.Group != "" || req.Kind.Kind != "Pod" || req.SubResource != "" || req.Operation != admissionv1.Create {
		return resp
	}
	if req.Name == "" { // a controller's pod: only its generateName is known
		if pod, err := decodeObject(req.Object.Raw); err == nil && pod != nil {
			log = log.WithField("name", nameOf(pod))
		}
	}
	patch, warnings, err := wh.patchPod(req.Object.Raw)
	if err != nil {
		log.WithError(err).Warn("pod admitted without chatguard")
		resp.Warnings = []string{"chatguard not injected: " + err.Error()}
		return resp
	}
	resp.Warnings = warnings
	if len(patch) > 0 {
		pt := admissionv1.PatchTypeJSONPatch
		resp.Patch, resp.PatchType = patch, &pt
		log.WithField("warnings", len(warnings)).Info("chatguard injected")
	} else if len(warnings) > 0 {
		log.WithField("warning", warnings[0]).Warn("pod admitted without chatguard")
	}
	return resp
}

// patchPod returns the JSON patch that injects the pod in raw, or nil when
// the pod has not opted in or is injected already.
func (wh *Webhook) patchPod(raw []byte) ([]byte, []string, error) {
	pod, err := decodeObject(raw)
	if err != nil {
		return nil, nil, fmt.Errorf("decoding the pod: %w", err)
	}
	if pod == nil {
		return nil, nil, errors.New("the request has no pod")
	}
	ann, err := annotationsOf(pod, false)
	if err != nil {
		return nil, nil, nil
	}
	switch v := str(ann, AnnotationInject); strings.ToLower(v) {
	case "enabled":
	case "true", "yes", "on", "1": // another injector's spelling: a mistake, not an opt-out
		return nil, []string{fmt.Sprintf("chatguard not injected: %s is %q; the value that opts a pod in is \"enabled\"", AnnotationInject, v)}, nil
	default:
		return nil, nil, nil
	}
	o := wh.opts
	if m := str(ann, AnnotationMode); m != "" {
		o.Mode, o.modeAsked = Mode(m), true
	}
	if o.Mode != ModeNative && o.Mode != ModeClassic {
		return nil, nil, fmt.Errorf("annotation %s: %q is neither %q nor %q", AnnotationMode, o.Mode, ModeNative, ModeClassic)
	}
	t := transformer{opts: o}
	if err := t.workload(object{where: "chatguard", m: pod}); err != nil {
		return nil, nil, err
	}
	injected, err := json.Marshal(pod)
	if err != nil {
		return nil, nil, err
	}
	ops, err := jsonpatch.CreatePatch(raw, injected)
	if err != nil || len(ops) == 0 {
		return nil, t.warnings, err
	}
	patch, err := json.Marshal(ops)
	return patch, t.warnings, err
}
