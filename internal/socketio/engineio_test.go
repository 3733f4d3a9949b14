package socketio

import (
	"errors"
	"testing"
)

func TestParseEIO(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in     string
		typ    EIOType
		data   string
		binary bool
	}{
		{`0{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}`, EIOOpen, `{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}`, false},
		{`1`, EIOClose, ``, false},
		{`2`, EIOPing, ``, false},
		{`2probe`, EIOPing, `probe`, false},
		{`3probe`, EIOPong, `probe`, false},
		{`3`, EIOPong, ``, false},
		{`42["send-message",{"text":"hi"}]`, EIOMessage, `2["send-message",{"text":"hi"}]`, false},
		{`4hello`, EIOMessage, `hello`, false},
		{`5`, EIOUpgrade, ``, false},
		{`6`, EIONoop, ``, false},
		{`bAQID`, EIOMessage, "\x01\x02\x03", true},
		{`b`, EIOMessage, ``, true},
		{`b3q2+7w==`, EIOMessage, "\xde\xad\xbe\xef", true},
	}
	for _, tt := range tests {
		typ, data, binary, err := ParseEIO([]byte(tt.in))
		if err != nil || typ != tt.typ || string(data) != tt.data || binary != tt.binary {
			t.Errorf("ParseEIO(%q) = %v, %q, %v, %v; want %v, %q, %v", tt.in, typ, data, binary, err, tt.typ, tt.data, tt.binary)
		}
	}
	for _, bad := range []string{``, `7`, `9x`, `x`, ` 4`, `B`, `b!!!`, `bAQI`, `bAQ==x`} {
		if typ, _, _, err := ParseEIO([]byte(bad)); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseEIO(%q) = %v, %v; want ErrMalformed", bad, typ, err)
		}
	}
}

func TestPayload(t *testing.T) {
	t.Parallel()
	// A polling response with an open, a connect, an event, a binary
	// message and a ping, as engine.io-parser's encodePayload writes it.
	body := "0{\"sid\":\"s\",\"upgrades\":[\"websocket\"],\"pingInterval\":25000,\"pingTimeout\":20000,\"maxPayload\":1000000}\x1e" +
		"40{\"sid\":\"x\"}\x1e" +
		"451-[\"upload\",{\"_placeholder\":true,\"num\":0}]\x1e" +
		"bAQID\x1e" +
		"2"
	packets := SplitPayload([]byte(body))
	want := []struct {
		typ    EIOType
		data   string
		binary bool
	}{
		{EIOOpen, `{"sid":"s","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}`, false},
		{EIOMessage, `0{"sid":"x"}`, false},
		{EIOMessage, `51-["upload",{"_placeholder":true,"num":0}]`, false},
		{EIOMessage, "\x01\x02\x03", true},
		{EIOPing, ``, false},
	}
	if len(packets) != len(want) {
		t.Fatalf("SplitPayload gave %d packets, want %d", len(packets), len(want))
	}
	for i, w := range want {
		typ, data, binary, err := ParseEIO(packets[i])
		if err != nil || typ != w.typ || string(data) != w.data || binary != w.binary {
			t.Errorf("packet %d: ParseEIO(%q) = %v, %q, %v, %v", i, packets[i], typ, data, binary, err)
		}
	}
	if got := JoinPayload(packets); string(got) != body {
		t.Errorf("JoinPayload(SplitPayload(body)) = %q, want body", got)
	}
	// Packets are capacity-limited: appending to one leaves the next alone.
	_ = append(packets[0], 'X')
	if packets[1][0] != '4' {
		t.Error("appending to a packet overwrote the next one")
	}
}

func TestSplitPayloadEdges(t *testing.T) {
	t.Parallel()
	tests := []struct {
		body string
		n    int
	}{
		{"", 1},
		{"2", 1},
		{"\x1e", 2},
		{"2\x1e\x1e3", 3},
	}
	for _, tt := range tests {
		if got := SplitPayload([]byte(tt.body)); len(got) != tt.n {
			t.Errorf("SplitPayload(%q) gave %d packets, want %d", tt.body, len(got), tt.n)
		}
	}
	if got := JoinPayload(nil); len(got) != 0 {
		t.Errorf("JoinPayload(nil) = %q", got)
	}
}

func TestEIOTypeString(t *testing.T) {
	t.Parallel()
	for typ, want := range map[EIOType]string{
		EIOOpen: "open", EIOClose: "close", EIOPing: "ping", EIOPong: "pong",
		EIOMessage: "message", EIOUpgrade: "upgrade", EIONoop: "noop", EIOType('b'): "EIOType(98)",
	} {
		if got := typ.String(); got != want {
			t.Errorf("EIOType(%q).String() = %q, want %q", byte(typ), got, want)
		}
	}
}
