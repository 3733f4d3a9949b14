package inject_test

import (
	"fmt"
	"strings"

	"github.com/chatguard/chatguard/internal/inject"
)

func ExampleTransform() {
	manifests := `apiVersion: v1
kind: Pod
metadata: {name: chat, labels: {app: chat}}
spec:
  containers:
  - {name: app, image: "ghcr.io/example/legacy-chat:1.0.0", ports: [{name: http, containerPort: 3000}]}
---
apiVersion: v1
kind: Service
metadata: {name: chat}
spec:
  selector: {app: chat}
  ports: [{port: 80, targetPort: http}]
`
	res, err := inject.Transform([]inject.Source{{Name: "chat.yaml", Data: []byte(manifests)}}, inject.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	docs := strings.Split(string(res.Manifests), "---\n")
	fmt.Print(docs[1]) // the Service, pointed at chatguard
	// Output:
	// apiVersion: v1
	// kind: Service
	// metadata:
	//   annotations:
	//     chatguard.io/original-target-ports: '{"80":"http"}'
	//   name: chat
	// spec:
	//   ports:
	//   - port: 80
	//     targetPort: chatguard
	//   selector:
	//     app: chat
}
