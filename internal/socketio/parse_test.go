package socketio

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want Packet
	}{
		{`0`, Packet{Type: PacketConnect, Namespace: "/", ID: -1}},
		{`0{"token":"abc"}`, Packet{Type: PacketConnect, Namespace: "/", ID: -1, Data: []byte(`{"token":"abc"}`)}},
		{`0/admin,`, Packet{Type: PacketConnect, Namespace: "/admin", ID: -1}},
		{`0/admin,{"token":"abc"}`, Packet{Type: PacketConnect, Namespace: "/admin", ID: -1, Data: []byte(`{"token":"abc"}`)}},
		{`0{"sid":"lv_VI97HAXpY6yYWAAAC"}`, Packet{Type: PacketConnect, Namespace: "/", ID: -1, Data: []byte(`{"sid":"lv_VI97HAXpY6yYWAAAC"}`)}},
		{`1`, Packet{Type: PacketDisconnect, Namespace: "/", ID: -1}},
		{`1/chat,`, Packet{Type: PacketDisconnect, Namespace: "/chat", ID: -1}},
		{`2["hello"]`, Packet{Type: PacketEvent, Namespace: "/", ID: -1, Data: []byte(`["hello"]`)}},
		{`2["send-message",{"conversationId":"c1","text":"hi"}]`, Packet{Type: PacketEvent, Namespace: "/", ID: -1, Data: []byte(`["send-message",{"conversationId":"c1","text":"hi"}]`)}},
		{`20["join-conversation",{"conversationId":"c1"}]`, Packet{Type: PacketEvent, Namespace: "/", ID: 0, Data: []byte(`["join-conversation",{"conversationId":"c1"}]`)}},
		{`2/chat,12["typing"]`, Packet{Type: PacketEvent, Namespace: "/chat", ID: 12, Data: []byte(`["typing"]`)}},
		{`2[42,"numeric event"]`, Packet{Type: PacketEvent, Namespace: "/", ID: -1, Data: []byte(`[42,"numeric event"]`)}},
		{`2[ "spaced" , 1 ] `, Packet{Type: PacketEvent, Namespace: "/", ID: -1, Data: []byte(`[ "spaced" , 1 ] `)}},
		{`2["connected"]`, Packet{Type: PacketEvent, Namespace: "/", ID: -1, Data: []byte(`["connected"]`)}},
		{`29007199254740991["max id"]`, Packet{Type: PacketEvent, Namespace: "/", ID: MaxAckID, Data: []byte(`["max id"]`)}},
		{`3/chat,17[{"ok":true}]`, Packet{Type: PacketAck, Namespace: "/chat", ID: 17, Data: []byte(`[{"ok":true}]`)}},
		{`35[]`, Packet{Type: PacketAck, Namespace: "/", ID: 5, Data: []byte(`[]`)}},
		{`4{"message":"Not authorized"}`, Packet{Type: PacketConnectError, Namespace: "/", ID: -1, Data: []byte(`{"message":"Not authorized"}`)}},
		{`4/chat,"legacy string error"`, Packet{Type: PacketConnectError, Namespace: "/chat", ID: -1, Data: []byte(`"legacy string error"`)}},
		{`51-["upload",{"_placeholder":true,"num":0}]`, Packet{Type: PacketBinaryEvent, Attachments: 1, Namespace: "/", ID: -1, Data: []byte(`["upload",{"_placeholder":true,"num":0}]`)}},
		{`510-/media,3["many",{"_placeholder":true,"num":9}]`, Packet{Type: PacketBinaryEvent, Attachments: 10, Namespace: "/media", ID: 3, Data: []byte(`["many",{"_placeholder":true,"num":9}]`)}},
		{`62-9[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`, Packet{Type: PacketBinaryAck, Attachments: 2, Namespace: "/", ID: 9, Data: []byte(`[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`)}},
		// Accepted as the JavaScript decoder accepts them, though no encoder writes them.
		{`2/,["root"]`, Packet{Type: PacketEvent, Namespace: "/", ID: -1, Data: []byte(`["root"]`)}},
		{`2007["zeros"]`, Packet{Type: PacketEvent, Namespace: "/", ID: 7, Data: []byte(`["zeros"]`)}},
		{`01`, Packet{Type: PacketConnect, Namespace: "/", ID: 1}},
		{`2/a[b"c,["odd namespace"]`, Packet{Type: PacketEvent, Namespace: `/a[b"c`, ID: -1, Data: []byte(`["odd namespace"]`)}},
		{`2["\u0063onnected"]`, Packet{Type: PacketEvent, Namespace: "/", ID: -1, Data: []byte(`["\u0063onnected"]`)}},
		{`2["é😀"]`, Packet{Type: PacketEvent, Namespace: "/", ID: -1, Data: []byte(`["é😀"]`)}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			got, err := Parse([]byte(tt.in))
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if !packetsEqual(got, tt.want) {
				t.Fatalf("Parse(%q) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseMalformed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in, why string
	}{
		{"empty", ``, "empty"},
		{"bad type", `7["x"]`, "unknown packet type"},
		{"letter type", `a`, "unknown packet type"},
		{"space type", ` ["x"]`, "unknown packet type"},
		{"engine.io prefix kept", `42["x"]`, "invalid CONNECT_ERROR payload"},
		{"open bracket", `2[`, "invalid JSON"},
		{"event without payload", `2`, "EVENT without payload"},
		{"event empty array", `2[]`, "without a name"},
		{"event object", `2{"a":1}`, "invalid EVENT payload"},
		{"event name object", `2[{"a":1}]`, "not a string or a number"},
		{"event name null", `2[null]`, "not a string or a number"},
		{"reserved event", `2["disconnect"]`, "reserved"},
		{"reserved event escaped", `2["\u0063onnect"]`, "reserved"},
		{"reserved newListener", `2/chat,["newListener"]`, "reserved"},
		{"ack without payload", `35`, "ACK without payload"},
		{"ack object", `3{"a":1}`, "invalid ACK payload"},
		{"connect array", `0["x"]`, "invalid CONNECT payload"},
		{"connect null", `0null`, "invalid CONNECT payload"},
		{"disconnect payload", `1{}`, "invalid DISCONNECT payload"},
		{"connect_error number", `4 1`, "invalid CONNECT_ERROR payload"},
		{"connect_error absent", `4`, "CONNECT_ERROR without payload"},
		{"invalid JSON", `2["a",]`, "invalid JSON"},
		{"invalid JSON string", `2["a]`, "invalid JSON"},
		{"trailing garbage", `2["a"]x`, "invalid JSON"},
		{"two values", `2["a"]["b"]`, "invalid JSON"},
		{"leading space", `2 ["a"]`, "invalid EVENT payload"},
		{"space after id", `21 ["a"]`, "invalid EVENT payload"},
		{"id then garbage", `21x["a"]`, "invalid EVENT payload"},
		{"huge id", `29007199254740992["a"]`, "ack id above"},
		{"int64 overflow id", `299999999999999999999999999["a"]`, "ack id above"},
		{"namespace without comma", `2/chat["a"]`, "namespace not followed"},
		{"namespace only", `0/chat`, "namespace not followed"},
		{"namespace too long", `2/` + strings.Repeat("n", MaxNamespaceLen) + `,["a"]`, "namespace longer"},
		{"binary no count", `5-["a"]`, "no attachment count"},
		{"binary no dash", `51["a"]`, "not followed by '-'"},
		{"binary only count", `51`, "not followed by '-'"},
		{"negative attachments", `5-1-["a"]`, "no attachment count"},
		{"zero attachments", `50-["a"]`, "zero attachments"},
		{"too many attachments", `511-["a"]`, "more than 10"},
		{"huge attachments", `599999999999999999999999-["a"]`, "more than 10"},
		{"binary event reserved", `51-["connect",{"_placeholder":true,"num":0}]`, "reserved"},
		{"binary ack object", `61-{}`, "invalid BINARY_ACK payload"},
		{"invalid UTF-8", "2[\"\xff\"]", "not UTF-8"},
		{"deep nesting", `3` + strings.Repeat("[", 20000) + strings.Repeat("]", 20000), "invalid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := Parse([]byte(tt.in))
			if err == nil {
				t.Fatalf("Parse(%q) = %+v, want an error", tt.in, p)
			}
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("Parse(%q) error %v does not wrap ErrMalformed", tt.in, err)
			}
			if !strings.Contains(err.Error(), tt.why) {
				t.Errorf("Parse(%q) error %q, want it to mention %q", tt.in, err, tt.why)
			}
		})
	}
}

// TestRoundTrip checks that canonical frames, as socket.io-parser writes
// them, come back byte for byte.
func TestRoundTrip(t *testing.T) {
	t.Parallel()
	for _, in := range realFrames {
		t.Run(in, func(t *testing.T) {
			t.Parallel()
			p, err := Parse([]byte(in))
			if err != nil {
				t.Fatalf("Parse(%q): %v", in, err)
			}
			if got := p.AppendEncode(nil); string(got) != in {
				t.Fatalf("AppendEncode(Parse(%q)) = %q", in, got)
			}
		})
	}
}

func TestRoundTripNonCanonical(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{`2/,["root"]`, `2["root"]`},
		{`2007["zeros"]`, `27["zeros"]`},
		{`601-/a,00[]`, `61-/a,0[]`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			t.Parallel()
			p, err := Parse([]byte(tt.in))
			if err != nil {
				t.Fatalf("Parse(%q): %v", tt.in, err)
			}
			if got := p.AppendEncode(nil); string(got) != tt.want {
				t.Fatalf("AppendEncode(Parse(%q)) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseDataAliasesInput(t *testing.T) {
	t.Parallel()
	b := []byte(`2/chat,["x"]`)
	p, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	b[9] = 'y'
	if string(p.Data) != `["y"]` {
		t.Errorf("Data = %s, want it to alias the input", p.Data)
	}
	b[3] = 'X'
	if p.Namespace != "/chat" {
		t.Errorf("Namespace = %q, want a copy", p.Namespace)
	}
}

func TestPacketTypeString(t *testing.T) {
	t.Parallel()
	for typ, want := range map[PacketType]string{
		PacketConnect: "CONNECT", PacketDisconnect: "DISCONNECT", PacketEvent: "EVENT", PacketAck: "ACK",
		PacketConnectError: "CONNECT_ERROR", PacketBinaryEvent: "BINARY_EVENT", PacketBinaryAck: "BINARY_ACK",
		PacketType(9): "PacketType(9)",
	} {
		if got := typ.String(); got != want {
			t.Errorf("PacketType(%d).String() = %q, want %q", typ, got, want)
		}
	}
}

func TestIsReservedEvent(t *testing.T) {
	t.Parallel()
	for name, want := range map[string]bool{
		"connect": true, "connect_error": true, "disconnect": true, "disconnecting": true,
		"newListener": true, "removeListener": true,
		"connected": false, "error": false, "Connect": false, "": false,
	} {
		if got := IsReservedEvent(name); got != want {
			t.Errorf("IsReservedEvent(%q) = %v, want %v", name, got, want)
		}
	}
}

func packetsEqual(a, b Packet) bool {
	return a.Type == b.Type && a.Attachments == b.Attachments && a.Namespace == b.Namespace &&
		a.ID == b.ID && bytes.Equal(a.Data, b.Data) && (a.Data == nil) == (b.Data == nil)
}

// realFrames are Socket.IO packets as socket.io-parser 4.2.7 encodes them
// (the Engine.IO '4' removed), used by the round-trip test, the fuzz seeds
// and the benchmarks.
var realFrames = []string{
	`0`,
	`0{"token":"eyJhbGciOiJIUzI1NiJ9.e30.x"}`,
	`0/admin,{"token":"abc"}`,
	`0{"sid":"lv_VI97HAXpY6yYWAAAC"}`,
	`0/chat,{"sid":"oSO0OpakMV_3jnilAAAA"}`,
	`1`,
	`1/chat,`,
	`2["send-message",{"conversationId":"c1","text":"hi"}]`,
	`2/chat,0["error",{"code":"RATE_LIMIT_EXCEEDED","message":"Too many <requests> & more \u0001 \"q\" \\ / é 😀"}]`,
	`20["join-conversation",{"conversationId":"c-42"}]`,
	`2["leave-conversation",{"conversationId":123}]`,
	`2["typing",{"conversationId":"c-42","isTyping":true}]`,
	`2["n",1,1e+21,1e-7,0.000001,0,123456789012345680000,1.5e+300,5e-324,0.1,100,null,true,false,null]`,
	`3/chat,17[{"ok":false}]`,
	`35[]`,
	`4{"message":"Not authorized"}`,
	`4/chat,{"message":"Not authorized","data":{"code":"TOKEN_EXPIRED"}}`,
	`51-["upload",{"_placeholder":true,"num":0}]`,
	`62-9[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`,
}

func TestBinaryAttachments(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int{
		`451-["upload",{"_placeholder":true,"num":0}]`: 1,
		`4610-/chat,3[{"_placeholder":true,"num":0}]`:  10,
		`46123-[]`:   123,
		`4599999-[]`: 0, // over 65,536
		`452["a"]`:   0, // a count without '-'
		`45-["a"]`:   0,
		`450-["a"]`:  0,
		`42["a"]`:    0,
		`43[1]`:      0,
		`451`:        0,
		`451-`:       1,
		`2`:          0,
		`5`:          0,
		``:           0,
	} {
		if got := BinaryAttachments([]byte(in)); got != want {
			t.Errorf("BinaryAttachments(%q) = %d, want %d", in, got, want)
		}
	}
}

func TestForeignText(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]bool{
		`{"type":0,"nsp":"/"}`: true, // socket.io-json-parser
		`["event"]`:            true,
		`7`:                    true, // no such type: the default decoder throws
		`x`:                    true,
		``:                     false, // Number("") is 0: a CONNECT there
		` 0`:                   false, // Number(" ") is 0
		"\t2[]":                false,
		"\u00a0":               false, // non-ASCII: could be JavaScript white space
		`0`:                    false, // the default parser's own
		`2["m"]`:               false,
		`6`:                    false,
		"\x00":                 false,
	} {
		if got := ForeignText([]byte(in)); got != want {
			t.Errorf("ForeignText(%q) = %v, want %v", in, got, want)
		}
	}
}
