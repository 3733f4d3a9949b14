package socketio

import (
	"bytes"
	"encoding/json"
	"reflect"
	"testing"
	"unicode/utf8"
)

func FuzzParse(f *testing.F) {
	for _, s := range realFrames {
		f.Add([]byte(s))
	}
	for _, s := range []string{
		``, `2[`, `2 ["a"]`, `2/chat["a"]`, `5-1-["a"]`, `50-["a"]`, `511-["a"]`, `2["a"]x`,
		`2/,["a"]`, `2007["a"]`, `29007199254740992["a"]`, `2["\u0063onnect"]`, `01`, "2[\"\xff\"]",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse(b)
		// The helpers must survive any payload, valid or not.
		EventName(b)
		EventArg(b, 0)
		EventArg(b, 2)
		StringField(b, "conversationId")
		if v, ok := Scalar(b); ok {
			// What it reads as a string or a number, JSON.parse reads as one too.
			var x any
			if err := json.Unmarshal(b, &x); err != nil {
				t.Fatalf("Scalar(%q) = %q, but it is not JSON: %v", b, v, err)
			}
			switch x := x.(type) {
			case string:
				if utf8.Valid(b) && x != v {
					t.Fatalf("Scalar(%q) = %q, JSON says %q", b, v, x)
				}
			case float64:
			default:
				t.Fatalf("Scalar(%q) = %q for a %T", b, v, x)
			}
		}
		n := BinaryAttachments(append([]byte{byte(EIOMessage)}, b...))
		if err != nil {
			return
		}
		if ForeignText(b) { // what parses is never another parser's
			t.Fatalf("ForeignText(%q) for a packet Parse reads as %+v", b, p)
		}
		if n != p.Attachments { // the relay's quick read agrees with the parser on what parses
			t.Fatalf("BinaryAttachments(4%q) = %d, Parse says %d", b, n, p.Attachments)
		}
		if p.Data != nil {
			EventName(p.Data)
			EventArg(p.Data, 1)
			StringField(p.Data, "conversationId")
		}
		enc := p.AppendEncode(nil)
		q, err := Parse(enc)
		if err != nil {
			t.Fatalf("Parse(%q) = %+v, but its encoding %q does not parse: %v", b, p, enc, err)
		}
		if !packetsEqual(p, q) {
			t.Fatalf("Parse(%q) = %+v, but its encoding %q parses as %+v", b, p, enc, q)
		}
		if again := q.AppendEncode(nil); !bytes.Equal(again, enc) {
			t.Fatalf("encoding is not a fixed point: %q then %q", enc, again)
		}
		if len(enc) > len(b) {
			t.Fatalf("encoding %q is longer than the input %q", enc, b)
		}
	})
}

func FuzzParseEIO(f *testing.F) {
	for _, s := range []string{
		``, `0{"sid":"a","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}`,
		`2probe`, `3probe`, `5`, `6`, `42["send-message",{"text":"hi"}]`, `bAQID`, `b`, `b!!`, `x`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		typ, data, binary, err := ParseEIO(b)
		if err != nil {
			return
		}
		if binary {
			if b[0] != 'b' || typ != EIOMessage {
				t.Fatalf("ParseEIO(%q): binary %v from a text packet", b, typ)
			}
			return
		}
		if typ != EIOType(b[0]) || !bytes.Equal(data, b[1:]) {
			t.Fatalf("ParseEIO(%q) = %v, %q", b, typ, data)
		}
	})
}

func FuzzSplitPayload(f *testing.F) {
	for _, s := range []string{
		"", "\x1e", "\x1e\x1e", "2", "40\x1e42[\"a\"]\x1ebAQID\x1e6",
		"0{\"sid\":\"s\",\"upgrades\":[],\"pingInterval\":1,\"pingTimeout\":2}\x1e40{\"sid\":\"x\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		packets := SplitPayload(body)
		if got := JoinPayload(packets); !bytes.Equal(got, body) {
			t.Fatalf("JoinPayload(SplitPayload(%q)) = %q", body, got)
		}
		if want := bytes.Count(body, []byte{recordSeparator}) + 1; len(packets) != want {
			t.Fatalf("SplitPayload(%q) gave %d packets, want %d", body, len(packets), want)
		}
		for _, p := range packets {
			if bytes.IndexByte(p, recordSeparator) >= 0 {
				t.Fatalf("packet %q holds a separator", p)
			}
			ParseEIO(p)
		}
	})
}

func FuzzParseOpen(f *testing.F) {
	for _, s := range []string{
		`{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}`,
		`{"sid":"a","upgrades":[],"pingInterval":300,"pingTimeout":200}`,
		`{"sid":"a","sid":"b","SID":"c","pingInterval":1,"pingTimeout":2}`,
		`{"sid":"a","pingInterval":-1,"pingTimeout":2}`, `null`, `{}`, ``, `[`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := ParseOpen(b)
		if err != nil {
			if !reflect.DeepEqual(o, Open{}) {
				t.Fatalf("ParseOpen(%q) failed but returned %+v", b, o)
			}
			return
		}
		if o.SID == "" || o.PingInterval < 0 || o.PingTimeout < 0 || o.MaxPayload < 0 {
			t.Fatalf("ParseOpen(%q) = %+v", b, o)
		}
	})
}

// FuzzStringify checks that appendStringify keeps the JSON's meaning, yields
// valid JSON and is idempotent.
func FuzzStringify(f *testing.F) {
	for _, s := range []string{
		`1.0`, `-0`, `1e400`, `1e-400`, `12345678901234567890`, `"\u003c\/\ud800\ud83d\ude00"`,
		` { "a" : [ 1 , true , null ] } `, "\"\xff\"", `{"a":1,"a":2}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		out, ok := appendStringify(nil, raw)
		if ok != json.Valid(raw) {
			t.Fatalf("appendStringify(%q) ok = %v", raw, ok)
		}
		if !ok {
			return
		}
		if !json.Valid(out) || !utf8.Valid(out) {
			t.Fatalf("appendStringify(%q) = %q, not valid UTF-8 JSON", raw, out)
		}
		again, _ := appendStringify(nil, out)
		if !bytes.Equal(again, out) {
			t.Fatalf("appendStringify not idempotent: %q then %q", out, again)
		}
		var a, b any
		if json.Unmarshal(raw, &a) != nil {
			return // a number beyond float64, which JavaScript reads as Infinity
		}
		if err := json.Unmarshal(out, &b); err != nil || !reflect.DeepEqual(a, b) {
			t.Fatalf("appendStringify(%q) = %q changes the value: %v vs %v", raw, out, a, b)
		}
	})
}

// FuzzEncodeEvent checks that any event the proxy builds parses back to
// the same name and arguments.
func FuzzEncodeEvent(f *testing.F) {
	f.Add("/chat", int64(3), "error", []byte(`{"code":"RATE_LIMIT_EXCEEDED","message":"\u003c\u0026"}`))
	f.Add("", int64(-1), "a\"b\x00", []byte(`not json`))
	f.Add("a,b", int64(0), "é", []byte(` [1.0, "x"] `))
	f.Fuzz(func(t *testing.T, ns string, id int64, name string, arg []byte) {
		// Namespaces come from Parse, so they are UTF-8 and short.
		if id > MaxAckID || IsReservedEvent(name) || len(ns) >= MaxNamespaceLen || !utf8.ValidString(ns) {
			return
		}
		frame := EncodeEvent(ns, id, name, arg)
		typ, data, _, err := ParseEIO(frame)
		if err != nil || typ != EIOMessage {
			t.Fatalf("EncodeEvent frame %q: %v %v", frame, typ, err)
		}
		p, err := Parse(data)
		if err != nil {
			t.Fatalf("EncodeEvent(%q, %d, %q, %q) = %q does not parse: %v", ns, id, name, arg, frame, err)
		}
		wantID := max(id, -1)
		if p.Type != PacketEvent || p.ID != wantID {
			t.Fatalf("EncodeEvent frame %q parses as %+v", frame, p)
		}
		var want []rune
		for _, r := range name {
			want = append(want, r) // invalid UTF-8 becomes U+FFFD byte by byte
		}
		if got, ok := EventName(p.Data); !ok || got != string(want) {
			t.Fatalf("EncodeEvent frame %q has name %q, want %q", frame, got, string(want))
		}
		if _, ok := EventArg(p.Data, 0); !ok {
			t.Fatalf("EncodeEvent frame %q has no argument", frame)
		}
	})
}
