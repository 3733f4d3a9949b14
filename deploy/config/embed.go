// Package deployconfig embeds chatguard's default configuration file, so that
// the binary's defaults and the documented file are one and the same.
package deployconfig

import _ "embed"

// DefaultYAML is deploy/config/chatguard.yaml.
//
//go:embed chatguard.yaml
var DefaultYAML []byte
