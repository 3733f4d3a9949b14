package socketio

import (
	"encoding/json"
	"testing"
)

// benchFrame is a typical client frame: an Engine.IO message carrying a
// send-message event.
var benchFrame = []byte(`42["send-message",{"conversationId":"c-42","text":"Hola, ¿cómo va el pedido 1234? Necesito confirmar la entrega para mañana.","clientMsgId":"m-9f1c2d"}]`)

func BenchmarkParseEventName(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchFrame)))
	for b.Loop() {
		_, data, _, err := ParseEIO(benchFrame)
		if err != nil {
			b.Fatal(err)
		}
		p, err := Parse(data)
		if err != nil {
			b.Fatal(err)
		}
		if name, ok := EventName(p.Data); !ok || name != "send-message" {
			b.Fatal(name)
		}
	}
}

func BenchmarkParseEventNameConversation(b *testing.B) {
	b.ReportAllocs()
	b.SetBytes(int64(len(benchFrame)))
	for b.Loop() {
		_, data, _, _ := ParseEIO(benchFrame)
		p, err := Parse(data)
		if err != nil {
			b.Fatal(err)
		}
		EventName(p.Data)
		arg, _ := EventArg(p.Data, 0)
		if c, ok := StringField(arg, "conversationId"); !ok || c != "c-42" {
			b.Fatal(c)
		}
	}
}

func BenchmarkParseNamespace(b *testing.B) {
	frame := []byte(`2/chat,17["typing",{"conversationId":"c-42","isTyping":true}]`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(frame); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUnmarshal is the baseline Parse+EventName avoid: decoding the
// whole payload to read its first element.
func BenchmarkUnmarshal(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		var v []json.RawMessage
		if err := json.Unmarshal(benchFrame[2:], &v); err != nil {
			b.Fatal(err)
		}
		var name string
		if err := json.Unmarshal(v[0], &name); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeEvent(b *testing.B) {
	arg := json.RawMessage(`{"success":false,"error":{"code":"RATE_LIMIT_EXCEEDED","message":"Too many requests","details":{"retryAfter":12},"timestamp":"2026-01-30T19:45:30.123Z"},"requestId":"req_1706645130123_abc123"}`)
	b.ReportAllocs()
	for b.Loop() {
		EncodeEvent("/chat", -1, "error", arg)
	}
}

func BenchmarkAppendEncode(b *testing.B) {
	p, err := Parse(benchFrame[1:])
	if err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		buf = p.AppendEncode(buf[:0])
	}
}
