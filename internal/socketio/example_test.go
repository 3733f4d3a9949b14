package socketio_test

import (
	"encoding/json"
	"fmt"

	"github.com/chatguard/chatguard/internal/socketio"
)

// A proxy reads a client's WebSocket frame, decides, and answers the
// client on the "error" event when it refuses the message.
func Example() {
	frame := []byte(`42/chat,7["send-message",{"conversationId":"c-42","text":"hi"}]`)

	typ, data, _, err := socketio.ParseEIO(frame)
	if err != nil || typ != socketio.EIOMessage {
		return // not a Socket.IO packet: relay it as it is
	}
	p, err := socketio.Parse(data)
	if err != nil {
		fmt.Println(err)
		return
	}
	name, _ := socketio.EventName(p.Data)
	arg, _ := socketio.EventArg(p.Data, 0)
	conv, _ := socketio.StringField(arg, "conversationId")
	fmt.Println(p.Type, p.Namespace, p.ID, name, conv)

	// The client asked for an ack (id 7), so the refusal goes there.
	refusal := json.RawMessage(`{"success":false,"error":{"code":"RATE_LIMIT_EXCEEDED"}}`)
	fmt.Printf("%s\n", socketio.EncodeAck(p.Namespace, p.ID, refusal))
	fmt.Printf("%s\n", socketio.EncodeEvent(p.Namespace, -1, "error", refusal))
	// Output:
	// EVENT /chat 7 send-message c-42
	// 43/chat,7[{"success":false,"error":{"code":"RATE_LIMIT_EXCEEDED"}}]
	// 42/chat,["error",{"success":false,"error":{"code":"RATE_LIMIT_EXCEEDED"}}]
}

func ExampleParse() {
	p, err := socketio.Parse([]byte(`51-["upload",{"_placeholder":true,"num":0}]`))
	fmt.Println(p.Type, p.Attachments, p.Namespace, p.ID, string(p.Data), err)

	_, err = socketio.Parse([]byte(`2["disconnect"]`))
	fmt.Println(err)
	// Output:
	// BINARY_EVENT 1 / -1 ["upload",{"_placeholder":true,"num":0}] <nil>
	// socketio: malformed packet: reserved event name
}

func ExampleSplitPayload() {
	body := []byte("40{\"sid\":\"x\"}\x1e42[\"hello\"]\x1ebAQID")
	for _, packet := range socketio.SplitPayload(body) {
		typ, data, binary, _ := socketio.ParseEIO(packet)
		fmt.Printf("%v %q %v\n", typ, data, binary)
	}
	// Output:
	// message "0{\"sid\":\"x\"}" false
	// message "2[\"hello\"]" false
	// message "\x01\x02\x03" true
}

func ExampleParseOpen() {
	o, err := socketio.ParseOpen([]byte(`{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}`))
	fmt.Printf("%+v %v\n", o, err)
	// Output:
	// {SID:lv_VI97HAXpY6yYWAAAC Upgrades:[websocket] PingInterval:25000 PingTimeout:20000 MaxPayload:1000000} <nil>
}
