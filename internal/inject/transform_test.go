package inject

import (
	"slices"
	"strings"
	"testing"
)

const deployment = `apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: app
        image: web
        ports: [{name: http, containerPort: 3000}]
`

func TestTransformErrors(t *testing.T) {
	t.Parallel()
	withSpec := func(spec string) string {
		return strings.Replace(deployment, "      containers:\n      - name: app\n        image: web\n        ports: [{name: http, containerPort: 3000}]\n", spec, 1)
	}
	for _, tc := range []struct {
		name, in string
		o        Options
		want     []string
	}{
		{"yaml syntax", "a: [\n", Options{}, []string{"test: document 1:"}},
		{"duplicate key", "kind: Pod\nkind: Pod\n", Options{}, []string{"test: document 1:", "already"}},
		{"not an object", deployment + "---\n- a\n", Options{}, []string{"test: document 2: want a Kubernetes object, have an array"}},
		{"no kind", "apiVersion: v1\nmetadata: {name: x}\n", Options{}, []string{"document 1: not a Kubernetes object"}},
		{"JSON array", `[{"kind": "Pod"}]`, Options{}, []string{"document 1: want a Kubernetes object, have an array"}},
		{"JSON syntax", `{"kind": "Pod",}`, Options{}, []string{"document 1:"}},
		{"containers not a list", withSpec("      containers: app\n"), Options{}, []string{"document 1 (Deployment web): pod spec:"}},
		{"no containers", withSpec("      containers: []\n"), Options{}, []string{"document 1 (Deployment web): pod spec has no containers"}},
		{"no template", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: 1}\n", Options{}, []string{"document 1 (Deployment web): no pod template at spec.template"}},
		{"template not an object", "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: c}\nspec: {jobTemplate: {spec: {template: 3}}}\n", Options{}, []string{"(CronJob c): spec.jobTemplate.spec: template: want an object"}},
		{"hand-made sidecar", withSpec("      containers:\n      - {name: app, image: web}\n      - {name: chatguard, image: cg}\n"), Options{}, []string{`(Deployment web): a container is already named "chatguard"`}},
		{"app on 8080", withSpec("      containers:\n      - {name: app, image: web, ports: [{containerPort: 8080}]}\n"), Options{}, []string{`container "app" declares port 8080`}},
		{"port named chatguard", withSpec("      containers:\n      - {name: app, image: web, ports: [{containerPort: 3000, name: chatguard}]}\n"), Options{}, []string{`declares port 3000 "chatguard"`}},
		{"hostNetwork", withSpec("      hostNetwork: true\n      containers: [{name: app, image: web}]\n"), Options{}, []string{"(Deployment web): hostNetwork: chatguard would listen on the node's own ports 8080 and 9090"}},
		{"volume taken", withSpec("      containers: [{name: app, image: web}]\n      volumes: [{name: chatguard-data, emptyDir: {}}]\n"), Options{}, []string{`a volume is already named "chatguard-data"`}},
		{"labels not strings", strings.Replace(deployment, "metadata: {labels: {app: web}}", "metadata: {labels: {app: 3}}", 1), Options{}, []string{"(Deployment web): pod template metadata: labels.app: want a string"}},
		{"annotations not an object", strings.Replace(deployment, "metadata: {name: web}", "metadata: {name: web, annotations: [a]}", 1), Options{}, []string{"(Deployment web): metadata: annotations: want an object"}},
		{"List items", "apiVersion: v1\nkind: List\nitems: {a: b}\n", Options{}, []string{"document 1 (List): items: want an array"}},
		{"List item", "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: ConfigMap\n- 7\n", Options{}, []string{"document 1 (List) item 2: want a Kubernetes object, have a number"}},
		{"every problem", "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: []}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: b}\n",
			Options{}, []string{"document 1 (Pod a): pod spec has no containers", "document 2 (Pod b): no pod spec"}},
		{"mode", deployment, Options{Mode: "sidecar"}, []string{`inject: mode "sidecar"`}},
		{"upstream on chatguard's port", deployment, Options{UpstreamPort: 9090}, []string{"upstream port 9090 is one chatguard listens on"}},
		{"upstream port range", deployment, Options{UpstreamPort: 70000}, []string{"upstream port 70000"}},
		{"marked injected, no sidecar", strings.Replace(deployment, "metadata: {labels: {app: web}}",
			"metadata: {labels: {app: web}, annotations: {chatguard.io/injected: \"true\"}}", 1),
			Options{}, []string{`(Deployment web): the pod is annotated chatguard.io/injected but has no "chatguard" container: run uninject`}},
		{"uninject: grace annotation", strings.Replace(deployment, "metadata: {labels: {app: web}}",
			"metadata: {labels: {app: web}, annotations: {chatguard.io/injected: \"true\", chatguard.io/original-grace-period: soon}}", 1),
			Options{Uninject: true}, []string{"chatguard.io/original-grace-period: \"soon\" is not a number"}},
		{"uninject: service annotation", "apiVersion: v1\nkind: Service\nmetadata: {name: s, annotations: {chatguard.io/original-target-ports: '{'}}\nspec: {ports: [{port: 80, targetPort: chatguard}]}\n",
			Options{Uninject: true}, []string{"document 1 (Service s): annotation chatguard.io/original-target-ports"}},
	} {
		_, err := Transform([]Source{{Name: "test", Data: []byte(tc.in)}}, tc.o)
		if err == nil {
			t.Errorf("%s: no error", tc.name)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q lacks %q", tc.name, err, w)
			}
		}
	}
}

func TestUpstreamPortOption(t *testing.T) {
	t.Parallel()
	svc := "---\napiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{port: 80, targetPort: http}, {name: alt, port: 81, targetPort: 4000}]\n"
	res := mustTransform(t, []byte(strings.Replace(deployment, "containerPort: 3000}]", "containerPort: 3000}, {name: alt, containerPort: 4000}]", 1)+svc),
		Options{UpstreamPort: 4000})
	out := string(res.Manifests)
	for _, want := range []string{"value: http://127.0.0.1:4000", `chatguard.io/original-target-ports: '{"81":4000}'`, "port: 80\n    targetPort: http"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// Injected again, with another port or none, the sidecar's upstream still decides.
	for _, port := range []int{0, 3000} {
		if again := mustTransform(t, res.Manifests, Options{UpstreamPort: port}); string(again.Manifests) != out {
			t.Errorf("re-injection with upstream port %d changed the output:\n%s", port, again.Manifests)
		}
	}
	res = mustTransform(t, []byte("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec: {containers: [{name: app, image: x}]}\n"), Options{})
	if !strings.Contains(string(res.Manifests), "value: http://127.0.0.1:3000") {
		t.Errorf("no containerPort: upstream is not 3000:\n%s", res.Manifests)
	}
}

// Services in one file are pointed at workloads of another; a namespace
// that differs, a selector that does not match and UDP ports keep theirs.
func TestServicesAcrossSources(t *testing.T) {
	t.Parallel()
	svcs := `apiVersion: v1
kind: Service
metadata: {name: same}
spec:
  selector: {app: web}
  ports: [{name: tcp, port: 3000}, {name: udp, port: 3000, protocol: UDP}]
---
apiVersion: v1
kind: Service
metadata: {name: other-ns, namespace: elsewhere}
spec: {selector: {app: web}, ports: [{port: 80, targetPort: http}]}
---
apiVersion: v1
kind: Service
metadata: {name: other-app}
spec: {selector: {app: api}, ports: [{port: 80, targetPort: http}]}
`
	dep := strings.Replace(deployment, "metadata: {name: web}", "metadata: {name: web, namespace: chat}", 1)
	res, err := Transform([]Source{{Name: "a.yaml", Data: []byte(dep)}, {Name: "b.yaml", Data: []byte(svcs)}}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	docs := decodeAll(t, res.Manifests)
	if len(docs) != 4 {
		t.Fatalf("%d documents", len(docs))
	}
	ports := func(i int) []any { return docs[i]["spec"].(map[string]any)["ports"].([]any) }
	if p := ports(1); p[0].(map[string]any)["targetPort"] != "chatguard" || p[1].(map[string]any)["targetPort"] != nil {
		t.Errorf("Service same: %v", p)
	}
	for i := 2; i < 4; i++ {
		if p := ports(i); p[0].(map[string]any)["targetPort"] != "http" {
			t.Errorf("document %d: %v", i+1, p)
		}
	}
	_, err = Transform([]Source{{Name: "a.yaml", Data: []byte(dep)}, {Name: "b.yaml", Data: []byte("kind: x\n")}}, Options{})
	if err == nil || !strings.Contains(err.Error(), "b.yaml: document 1: not a Kubernetes object") {
		t.Errorf("error without the file name: %v", err)
	}
}

// Fields inside the pod spec that the vendored corev1 does not know survive
// injection and uninjection.
func TestUnknownPodSpecFieldsSurvive(t *testing.T) {
	t.Parallel()
	in := strings.Replace(deployment, "        image: web\n", "        image: web\n        futureContainerField: {a: 1}\n", 1)
	in = strings.Replace(in, "      containers:\n", "      futurePodField: [x]\n      containers:\n", 1)
	res := mustTransform(t, []byte(in), Options{})
	for _, want := range []string{"futureContainerField:\n          a: 1", "futurePodField:\n      - x"} {
		if !strings.Contains(string(res.Manifests), want) {
			t.Errorf("output lacks %q:\n%s", want, res.Manifests)
		}
	}
	un := mustTransform(t, res.Manifests, Options{Uninject: true})
	if want, have := decodeAll(t, []byte(in)), decodeAll(t, un.Manifests); !equalJSON(want, have) {
		t.Errorf("uninject:\n%s", un.Manifests)
	}
}

// A preStop hook changed after injection is the owner's: uninject keeps it.
func TestUninjectKeepsAChangedHook(t *testing.T) {
	t.Parallel()
	res := mustTransform(t, []byte(deployment), Options{})
	changed := strings.Replace(string(res.Manifests), "- node\n", "- nodejs\n", 1)
	un := mustTransform(t, []byte(changed), Options{Uninject: true})
	if !strings.Contains(string(un.Manifests), "- nodejs") || len(un.Warnings) != 1 || !strings.Contains(un.Warnings[0], "preStop hook changed") {
		t.Errorf("warnings %q, output:\n%s", un.Warnings, un.Manifests)
	}
	// Uninjecting input that was never injected changes nothing.
	plain := mustTransform(t, []byte(deployment), Options{Uninject: true})
	if again := mustTransform(t, plain.Manifests, Options{Uninject: true}); string(again.Manifests) != string(plain.Manifests) {
		t.Errorf("uninject of plain input changed it")
	}
}

func TestEmptyInput(t *testing.T) {
	t.Parallel()
	for _, in := range []string{"", "\n", "---\n---\n", "# only a comment\n", "null\n"} {
		res := mustTransform(t, []byte(in), Options{})
		if len(res.Manifests) != 0 {
			t.Errorf("%q → %q", in, res.Manifests)
		}
	}
}

// In a pod of several containers the app is the one kubectl's
// default-container annotation names (with its port, or 3000: never
// another container's), else the first, or the container declaring 3000
// when the first declares no port; when it cannot tell, a warning says
// what it assumed.
func TestAppContainerOfSeveral(t *testing.T) {
	t.Parallel()
	pod := func(annotations, containers string) []byte {
		return []byte("apiVersion: v1\nkind: Pod\nmetadata: {name: p" + annotations + "}\nspec:\n  containers:\n" + containers)
	}
	const shipperFirst = "  - {name: log-shipper, image: fluent-bit}\n" +
		"  - {name: app, image: chat, ports: [{containerPort: 3001}]}\n" +
		"  - {name: redis, image: redis, ports: [{containerPort: 6379}]}\n"
	for _, tc := range []struct {
		name           string
		in             []byte
		upstream, hook string // the hook's container
		warn           string
	}{
		{"a log shipper first", pod("", shipperFirst), "3000", "log-shipper", `the first declares no containerPort: chatguard forwards to 3000 and the drain hook goes on container "log-shipper"`},
		{"the default container", pod(", annotations: {kubectl.kubernetes.io/default-container: app}", shipperFirst), "3001", "app", ""},
		{"the default container without a port", pod(", annotations: {kubectl.kubernetes.io/default-container: app}",
			"  - {name: metrics, image: exporter, ports: [{containerPort: 9100}]}\n  - {name: app, image: chat}\n"), "3000", "app", ""},
		{"the app without a port, an exporter after it", pod("", "  - {name: app, image: chat}\n  - {name: metrics, image: exporter, ports: [{containerPort: 9100}]}\n"),
			"3000", "app", "the first declares no containerPort"},
		{"3000 served by a later container", pod("", "  - {name: log-shipper, image: fluent-bit}\n  - {name: app, image: chat, ports: [{containerPort: 9100}, {containerPort: 3000}]}\n"), "3000", "app", ""},
		{"no port anywhere", pod("", "  - {name: log-shipper, image: fluent-bit}\n  - {name: app, image: chat}\n"), "3000", "log-shipper", "the first declares no containerPort"},
	} {
		res := mustTransform(t, tc.in, Options{})
		out := string(res.Manifests)
		if !strings.Contains(out, "value: http://127.0.0.1:"+tc.upstream+"\n") {
			t.Errorf("%s: upstream is not %s:\n%s", tc.name, tc.upstream, out)
		}
		if !strings.Contains(out, "chatguard.io/drain-hook: "+tc.hook+"\n") {
			t.Errorf("%s: the drain hook is not on %s:\n%s", tc.name, tc.hook, out)
		}
		warned := strings.Join(res.Warnings, "\n")
		if tc.warn == "" && warned != "" || !strings.Contains(warned, tc.warn) {
			t.Errorf("%s: warnings %q, want %q", tc.name, warned, tc.warn)
		}
	}
}

// What inject leaves alone, it says: a workload opted out, a kind with a
// pod template it does not know, an input with no workload at all.
func TestLeftAloneIsSaid(t *testing.T) {
	t.Parallel()
	optedOut := strings.Replace(deployment, "metadata: {labels: {app: web}}", "metadata: {labels: {app: web}, annotations: {chatguard.io/inject: disabled}}", 1)
	rollout := strings.Replace(deployment, "apiVersion: apps/v1\nkind: Deployment", "apiVersion: argoproj.io/v1alpha1\nkind: Rollout", 1)
	for _, tc := range []struct{ name, in, warn string }{
		{"opted out", optedOut, "document 1 (Deployment web): chatguard.io/inject: disabled: left as it is"},
		{"unknown kind", rollout, "document 1 (Rollout web): argoproj.io/v1alpha1 Rollout has a pod template, but is not a workload kind inject knows: left as it is"},
		{"no workload", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n", "no workload in the input"},
	} {
		res := mustTransform(t, []byte(tc.in), Options{})
		if strings.Contains(string(res.Manifests), "name: chatguard") {
			t.Errorf("%s: injected:\n%s", tc.name, res.Manifests)
		}
		if !slices.ContainsFunc(res.Warnings, func(w string) bool { return strings.Contains(w, tc.warn) }) {
			t.Errorf("%s: warnings %q lack %q", tc.name, res.Warnings, tc.warn)
		}
	}
	// Only what is true is said: not "no workload" beside an opted-out one,
	// nor when uninjecting Services alone.
	svc := "apiVersion: v1\nkind: Service\nmetadata: {name: s, annotations: {chatguard.io/original-target-ports: '{\"80\":3000}'}}\nspec: {ports: [{port: 80, targetPort: chatguard}]}\n"
	for name, run := range map[string]func() *Result{
		"opted out":          func() *Result { return mustTransform(t, []byte(optedOut), Options{}) },
		"uninjected service": func() *Result { return mustTransform(t, []byte(svc), Options{Uninject: true}) },
	} {
		if res := run(); slices.ContainsFunc(res.Warnings, func(w string) bool { return strings.Contains(w, "no workload") }) {
			t.Errorf("%s: warnings %q", name, res.Warnings)
		}
	}
}

// A NetworkPolicy in the input that admits the app's port but not
// chatguard's would drop the traffic the Services now send to chatguard:
// inject says so.
func TestNetworkPolicyThatWouldDropTraffic(t *testing.T) {
	t.Parallel()
	policy := func(selector, ports string) string {
		return "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np}\nspec:\n  podSelector: " + selector +
			"\n  policyTypes: [Ingress]\n  ingress:\n  - from: [{podSelector: {}}]\n" + ports
	}
	for _, tc := range []struct {
		name, policy string
		warn         bool
	}{
		{"app's port only", policy("{matchLabels: {app: web}}", "    ports: [{protocol: TCP, port: 3000}]\n"), true},
		{"app's port by name", policy("{matchLabels: {app: web}}", "    ports: [{port: http}]\n"), true},
		{"every pod of the namespace", policy("{}", "    ports: [{port: 3000}]\n"), true},
		{"chatguard's port too", policy("{matchLabels: {app: web}}", "    ports: [{port: 3000}, {port: 8080}]\n"), false},
		{"a range over chatguard's port", policy("{matchLabels: {app: web}}", "    ports: [{port: 3000}, {port: 8000, endPort: 8100}]\n"), false},
		{"every port", policy("{matchLabels: {app: web}}", ""), false},
		{"another app", policy("{matchLabels: {app: db}}", "    ports: [{port: 3000}]\n"), false},
		{"matchExpressions In", policy("{matchExpressions: [{key: app, operator: In, values: [web, api]}]}", "    ports: [{port: 3000}]\n"), true},
		{"matchExpressions Exists", policy("{matchExpressions: [{key: app, operator: Exists}]}", "    ports: [{port: 3000}]\n"), true},
		{"matchExpressions NotIn", policy("{matchExpressions: [{key: app, operator: NotIn, values: [web]}]}", "    ports: [{port: 3000}]\n"), false},
		{"labels and an expression excluding the pod", policy("{matchLabels: {app: web}, matchExpressions: [{key: app, operator: DoesNotExist}]}", "    ports: [{port: 3000}]\n"), false},
		{"another namespace", strings.Replace(policy("{}", "    ports: [{port: 3000}]\n"), "metadata: {name: np}", "metadata: {name: np, namespace: other}", 1), false},
	} {
		dep := deployment
		if tc.name == "another namespace" {
			dep = strings.Replace(deployment, "metadata: {name: web}", "metadata: {name: web, namespace: chat}", 1)
		}
		res := mustTransform(t, []byte(dep+tc.policy), Options{})
		warned := slices.ContainsFunc(res.Warnings, func(w string) bool {
			return strings.Contains(w, "(NetworkPolicy np): spec.ingress[0] admits the app's port but not chatguard's (8080")
		})
		if warned != tc.warn {
			t.Errorf("%s: warnings %q, want a NetworkPolicy warning: %v", tc.name, res.Warnings, tc.warn)
		}
	}
}

// CHATGUARD_REPLICAS follows the workload (QA: a Deployment of 3 got none,
// so while Redis was down each pod admitted the whole limit, 3 times it in
// all): the pod template's chatguard.io/replicas, else spec.replicas; a
// pod (the webhook's case) has only the annotation.
func TestReplicasForTheFallbackShare(t *testing.T) {
	t.Parallel()
	replicasEnv := func(t *testing.T, src string) (string, []string) {
		t.Helper()
		res := mustTransform(t, []byte(src), Options{})
		for _, ob := range decodeAll(t, res.Manifests) {
			wk, _ := workloadKindOf(ob)
			pt, err := openPodTemplate(ob, wk)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range pt.typed.InitContainers {
				for _, e := range c.Env {
					if e.Name == "CHATGUARD_REPLICAS" {
						return e.Value, res.Warnings
					}
				}
			}
		}
		return "", res.Warnings
	}
	withReplicas := strings.Replace(deployment, "spec:\n  selector", "spec:\n  replicas: 4\n  selector", 1)
	annotated := strings.Replace(withReplicas, "    metadata: {labels: {app: web}}", "    metadata: {labels: {app: web}, annotations: {chatguard.io/replicas: \"10\"}}", 1)
	pod := "apiVersion: v1\nkind: Pod\nmetadata: {name: web-1, annotations: {chatguard.io/replicas: \"6\"}}\nspec:\n  containers: [{name: app, image: web}]\n"
	for _, tc := range []struct {
		name, in, want, warning string
	}{
		// Left out, as with an autoscaler: the count is unknown (QA: the
		// webhook warned, the command did not).
		{"unset", deployment, "", "no spec.replicas (an autoscaler's count?)"},
		{"one", strings.Replace(withReplicas, "replicas: 4", "replicas: 1", 1), "", ""},
		{"spec.replicas", withReplicas, "4", "CHATGUARD_REPLICAS=4, from spec.replicas"},
		{"annotation first", annotated, "10", ""},
		{"a pod's annotation", pod, "6", ""},
		{"daemonset", strings.Replace(strings.Replace(deployment, "Deployment", "DaemonSet", 1), "metadata: {name: web}", "metadata: {name: edge}", 1), "", "annotate the pod template chatguard.io/replicas with the number of nodes"},
	} {
		got, warnings := replicasEnv(t, tc.in)
		if got != tc.want {
			t.Errorf("%s: CHATGUARD_REPLICAS %q, want %q", tc.name, got, tc.want)
		}
		if tc.warning == "" && len(warnings) > 0 || tc.warning != "" && (len(warnings) != 1 || !strings.Contains(warnings[0], tc.warning)) {
			t.Errorf("%s: warnings %q, want %q", tc.name, warnings, tc.warning)
		}
	}
	// A bad annotation is a warning, the count falls back to spec.replicas:
	// as an error, the webhook admitted the pod without chatguard at all.
	for _, bad := range []string{`"0"`, `"three"`, `"-2"`, `"20000"`, `3`} {
		in := strings.Replace(annotated, `"10"`, bad, 1)
		got, warnings := replicasEnv(t, in)
		if got != "4" || len(warnings) != 2 || !strings.Contains(warnings[0], "chatguard.io/replicas: ") || !strings.Contains(warnings[0], "ignored") {
			t.Errorf("annotation %s: CHATGUARD_REPLICAS %q, warnings %q", bad, got, warnings)
		}
	}
	// More than config validation takes is capped, else the sidecar would not start.
	if got, _ := replicasEnv(t, strings.Replace(withReplicas, "replicas: 4", "replicas: 20000", 1)); got != "10000" {
		t.Errorf("spec.replicas 20000: CHATGUARD_REPLICAS %q, want the cap 10000", got)
	}
	// A pod of a ReplicaSet (the webhook's case) without the annotation is told.
	owned := "apiVersion: v1\nkind: Pod\nmetadata: {name: web-1, ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: web-7d4b9, uid: u, controller: true}]}\nspec:\n  containers: [{name: app, image: web}]\n"
	if got, warnings := replicasEnv(t, owned); got != "" || len(warnings) != 1 || !strings.Contains(warnings[0], "ReplicaSet web-7d4b9") {
		t.Errorf("owned pod: CHATGUARD_REPLICAS %q, warnings %q", got, warnings)
	}
}

// Google's distroless Node.js images have node at /nodejs/bin/node and no
// PATH: the drain hook names it there (QA: "node" failed to start, so the
// app stopped before chatguard had drained). Uninject takes out either form.
func TestDrainHookFindsNode(t *testing.T) {
	t.Parallel()
	for image, want := range map[string]string{
		"web":                                 "node",
		"node:20-alpine":                      "node",
		"localhost:5000/chat:1.2":             "node",
		"gcr.io/distroless/nodejs20-debian12": "/nodejs/bin/node",
		"gcr.io/distroless/nodejs22-debian12:nonroot":                                                                 "/nodejs/bin/node",
		"gcr.io/distroless/nodejs20-debian12@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef": "/nodejs/bin/node",
		"mirror.example:5000/distroless/nodejs20-debian12:latest":                                                     "/nodejs/bin/node",
		"example/app:distroless-nodejs":                                                                               "node",
	} {
		in := strings.Replace(deployment, "image: web\n", "image: \""+image+"\"\n", 1)
		res := mustTransform(t, []byte(in), Options{})
		obs := decodeAll(t, res.Manifests)
		pt, err := openPodTemplate(obs[0], workloadKinds["Deployment"])
		if err != nil {
			t.Fatal(err)
		}
		lc := pt.typed.Containers[0].Lifecycle
		if lc == nil || lc.PreStop == nil || lc.PreStop.Exec == nil || lc.PreStop.Exec.Command[0] != want {
			t.Errorf("%s: preStop %+v, want %s", image, lc, want)
			continue
		}
		un := mustTransform(t, res.Manifests, Options{Uninject: true})
		if len(un.Warnings) != 0 || !equalJSON(decodeAll(t, []byte(in)), decodeAll(t, un.Manifests)) {
			t.Errorf("%s: uninject: %q\n%s", image, un.Warnings, un.Manifests)
		}
	}
	// An image built FROM a distroless one has a name that says nothing;
	// its command names node's path (review).
	in := strings.Replace(deployment, "image: web\n", "image: myorg/chat-api:1.2\n        command: [/nodejs/bin/node, server.js]\n", 1)
	res := mustTransform(t, []byte(in), Options{})
	pt, err := openPodTemplate(decodeAll(t, res.Manifests)[0], workloadKinds["Deployment"])
	if err != nil {
		t.Fatal(err)
	}
	if lc := pt.typed.Containers[0].Lifecycle; lc == nil || lc.PreStop == nil || lc.PreStop.Exec.Command[0] != "/nodejs/bin/node" {
		t.Errorf("command /nodejs/bin/node: preStop %+v", lc)
	}
	if un := mustTransform(t, res.Manifests, Options{Uninject: true}); len(un.Warnings) != 0 || !equalJSON(decodeAll(t, []byte(in)), decodeAll(t, un.Manifests)) {
		t.Errorf("command /nodejs/bin/node: uninject: %q\n%s", un.Warnings, un.Manifests)
	}
}
