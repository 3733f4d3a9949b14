package socketio

import (
	"encoding/json"
	"testing"
)

// The want strings below are socket.io-parser 4.2.7's Encoder output for the
// same packet, with the Engine.IO '4' in front for the Encode functions.

func TestAppendEncode(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		p    Packet
		want string
	}{
		{"connect", Packet{Type: PacketConnect, Namespace: "/", ID: -1}, `0`},
		{"connect auth", Packet{Type: PacketConnect, Namespace: "/admin", ID: -1, Data: []byte(`{"token":"abc"}`)}, `0/admin,{"token":"abc"}`},
		{"disconnect", Packet{Type: PacketDisconnect, Namespace: "/", ID: -1}, `1`},
		{"disconnect ns", Packet{Type: PacketDisconnect, Namespace: "/chat", ID: -1}, `1/chat,`},
		{"event", Packet{Type: PacketEvent, Namespace: "/", ID: -1, Data: []byte(`["send-message",{"conversationId":"c1","text":"hi"}]`)}, `2["send-message",{"conversationId":"c1","text":"hi"}]`},
		{"event ns id 0", Packet{Type: PacketEvent, Namespace: "/chat", ID: 0, Data: []byte(`["x"]`)}, `2/chat,0["x"]`},
		{"ack", Packet{Type: PacketAck, Namespace: "/chat", ID: 17, Data: []byte(`[{"ok":false}]`)}, `3/chat,17[{"ok":false}]`},
		{"ack empty", Packet{Type: PacketAck, Namespace: "/", ID: 5, Data: []byte(`[]`)}, `35[]`},
		{"connect_error", Packet{Type: PacketConnectError, Namespace: "/", ID: -1, Data: []byte(`{"message":"Not authorized"}`)}, `4{"message":"Not authorized"}`},
		{"binary event", Packet{Type: PacketBinaryEvent, Attachments: 1, Namespace: "/", ID: -1, Data: []byte(`["upload",{"_placeholder":true,"num":0}]`)}, `51-["upload",{"_placeholder":true,"num":0}]`},
		{"binary ack", Packet{Type: PacketBinaryAck, Attachments: 2, Namespace: "/", ID: 9, Data: []byte(`[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`)}, `62-9[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]`},
		{"empty namespace is root", Packet{Type: PacketDisconnect, ID: -1}, `1`},
		// Where JavaScript would throw or write an ambiguous frame.
		{"namespace without slash", Packet{Type: PacketDisconnect, Namespace: "chat", ID: -1}, `1/chat,`},
		{"namespace with comma", Packet{Type: PacketEvent, Namespace: `/a,["evil"]`, ID: -1, Data: []byte(`["x"]`)}, `2/a,["x"]`},
		{"namespace injection", Packet{Type: PacketEvent, Namespace: `["a"`, ID: -1, Data: []byte(`["b"]`)}, `2/["a",["b"]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tt.p.AppendEncode([]byte("4")); string(got) != "4"+tt.want {
				t.Errorf("AppendEncode = %q, want %q", got, "4"+tt.want)
			}
		})
	}
}

func TestEncodeEvent(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		ns    string
		id    int64
		event string
		args  []json.RawMessage
		want  string
	}{
		{"no args", "/", -1, "ping", nil, `42["ping"]`},
		{"root", "", -1, "send-message", raws(`{"conversationId":"c1","text":"hi"}`), `42["send-message",{"conversationId":"c1","text":"hi"}]`},
		{"namespace and id", "/chat", 0, "error", raws(`{"code":"RATE_LIMIT_EXCEEDED"}`), `42/chat,0["error",{"code":"RATE_LIMIT_EXCEEDED"}]`},
		{
			// What json.Marshal writes for Too many <requests> & more
			// U+2028 \x01 "q" \ / é 😀, respelt as JSON.stringify spells it.
			"json.Marshal escapes", "/chat", 0, "error",
			raws(`{"code":"RATE_LIMIT_EXCEEDED","message":"Too many \u003crequests\u003e \u0026 more \u2028 \u0001 \"q\" \\ / é 😀"}`),
			"42/chat,0[\"error\",{\"code\":\"RATE_LIMIT_EXCEEDED\",\"message\":\"Too many <requests> & more \u2028 \\u0001 \\\"q\\\" \\\\ / é 😀\"}]",
		},
		{"indented arg", "/", -1, "x", raws("{\n  \"a\": [ 1, 2 ],\n  \"b\": \"c d\"\n}"), `42["x",{"a":[1,2],"b":"c d"}]`},
		{"numbers", "/", -1, "n", raws(`1.0`, `1e21`, `1e-7`, `0.000001`, `-0`, `123456789012345680000`, `1.5e300`, `5e-324`, `0.1`, `100`, `null`, `true`, `false`),
			`42["n",1,1e+21,1e-7,0.000001,0,123456789012345680000,1.5e+300,5e-324,0.1,100,null,true,false]`},
		{"undefined args", "/", -1, "u", []json.RawMessage{nil, json.RawMessage(`{bad`), json.RawMessage(``)}, `42["u",null,null,null]`},
		{"name escapes", "/", -1, "a\"b\\c\x00\x07\x1f<>&\u2028é😀\x7f", nil, "42[\"a\\\"b\\\\c\\u0000\\u0007\\u001f<>&\u2028é😀\x7f\"]"},
		{"name invalid UTF-8", "/", -1, "a\xffb", nil, "42[\"a\uFFFDb\"]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := EncodeEvent(tt.ns, tt.id, tt.event, tt.args...); string(got) != tt.want {
				t.Errorf("EncodeEvent = %q\nwant            %q", got, tt.want)
			}
		})
	}
}

func TestEncodeAck(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		ns   string
		id   int64
		args []json.RawMessage
		want string
	}{
		{"no args", "/", 5, nil, `435[]`},
		{"namespace", "/chat", 17, raws(`{"ok":false}`), `43/chat,17[{"ok":false}]`},
		{"two args", "", 3, raws(`null`, ` {"success" : false} `), `433[null,{"success":false}]`},
		{"no id", "/", -1, raws(`1`), `43[1]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := EncodeAck(tt.ns, tt.id, tt.args...); string(got) != tt.want {
				t.Errorf("EncodeAck = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestEncodeConnectError(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, ns, message string
		data              json.RawMessage
		want              string
	}{
		{"message", "/", "Not authorized", nil, `44{"message":"Not authorized"}`},
		{"data", "/chat", "Not authorized", json.RawMessage(`{ "code": "TOKEN_EXPIRED" }`), `44/chat,{"message":"Not authorized","data":{"code":"TOKEN_EXPIRED"}}`},
		{"null data", "/", "x", json.RawMessage(`null`), `44{"message":"x","data":null}`},
		{"invalid data left out", "/", "x", json.RawMessage(`{`), `44{"message":"x"}`},
		{"quotes", "/", `say "no"`, nil, `44{"message":"say \"no\""}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := EncodeConnectError(tt.ns, tt.message, tt.data); string(got) != tt.want {
				t.Errorf("EncodeConnectError = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestEncodeDisconnect(t *testing.T) {
	t.Parallel()
	for ns, want := range map[string]string{"": `41`, "/": `41`, "/chat": `41/chat,`} {
		if got := EncodeDisconnect(ns); string(got) != want {
			t.Errorf("EncodeDisconnect(%q) = %q, want %q", ns, got, want)
		}
	}
}

// TestEncodeParses checks that what the Encode functions build is read back
// by Parse as what was meant.
func TestEncodeParses(t *testing.T) {
	t.Parallel()
	tests := []struct {
		frame []byte
		want  Packet
	}{
		{EncodeEvent("/chat", 4, "error", raws(`{"a":1}`)...), Packet{Type: PacketEvent, Namespace: "/chat", ID: 4, Data: []byte(`["error",{"a":1}]`)}},
		{EncodeAck("/", 0), Packet{Type: PacketAck, Namespace: "/", ID: 0, Data: []byte(`[]`)}},
		{EncodeConnectError("/x", "no", nil), Packet{Type: PacketConnectError, Namespace: "/x", ID: -1, Data: []byte(`{"message":"no"}`)}},
		{EncodeDisconnect("/x"), Packet{Type: PacketDisconnect, Namespace: "/x", ID: -1}},
	}
	for _, tt := range tests {
		typ, data, binary, err := ParseEIO(tt.frame)
		if err != nil || typ != EIOMessage || binary {
			t.Fatalf("ParseEIO(%q) = %v, %v, %v", tt.frame, typ, binary, err)
		}
		p, err := Parse(data)
		if err != nil {
			t.Fatalf("Parse(%q): %v", data, err)
		}
		if !packetsEqual(p, tt.want) {
			t.Errorf("Parse(%q) = %+v, want %+v", data, p, tt.want)
		}
	}
}

func raws(s ...string) []json.RawMessage {
	out := make([]json.RawMessage, len(s))
	for i, v := range s {
		out[i] = json.RawMessage(v)
	}
	return out
}
