// Package inject adds the chatguard sidecar to Kubernetes workloads and
// takes it out again.
//
// [Transform] is a transform over manifests (multi-document YAML, JSON,
// v1 Lists): every Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job
// and CronJob gets the chatguard container, its volumes, the app's drain
// hook, a long enough grace period and the scrape annotations; every Service
// in the same input that selects an injected pod is pointed at chatguard's
// named port. [Webhook] applies the same transform to Pods as a mutating
// admission webhook.
//
// Objects are handled as unstructured maps. The pod spec is converted to
// corev1 types to read and validate it, and the parts chatguard adds are built
// as corev1 values; but only those parts are written back into the map, so
// every field the transform does not own — including fields newer than the
// vendored corev1 — comes out exactly as it went in.
//
// Everything the transform adds is recorded in annotations on the pod
// template (chatguard.io/…), so that uninjecting gives back the original
// objects and injecting twice equals injecting once.
package inject

// Annotations chatguard reads and writes.
const (
	// AnnotationInjected marks a pod template (and its workload) as injected.
	AnnotationInjected = "chatguard.io/injected"
	// AnnotationInject set to "enabled" on a Pod opts it in to the webhook.
	AnnotationInject = "chatguard.io/inject"
	// AnnotationMode selects the webhook's form for a Pod: native (default) or classic.
	AnnotationMode = "chatguard.io/mode"
	// AnnotationReplicas on a pod template is the number of pods sharing the
	// rate limits (CHATGUARD_REPLICAS: while Redis is down each enforces its
	// share); without it a Deployment's, StatefulSet's or ReplicaSet's
	// spec.replicas is taken.
	AnnotationReplicas = "chatguard.io/replicas"
	// AnnotationDrainHook lists the containers whose preStop hook chatguard added.
	AnnotationDrainHook = "chatguard.io/drain-hook"
	// AnnotationOriginalGracePeriod holds terminationGracePeriodSeconds as it
	// was before chatguard raised it ("unset" when it had no value).
	AnnotationOriginalGracePeriod = "chatguard.io/original-grace-period"
	// AnnotationAddedAnnotations lists the other annotations chatguard added
	// to the pod template (the prometheus.io ones), comma-separated.
	AnnotationAddedAnnotations = "chatguard.io/added-annotations"
	// AnnotationOriginalTargetPorts on a Service maps each port chatguard
	// re-pointed (by port number) to its original targetPort, as JSON; null
	// means the port had no targetPort.
	AnnotationOriginalTargetPorts = "chatguard.io/original-target-ports"
)
