package socketio

import (
	"errors"
	"reflect"
	"testing"
)

func TestParseOpen(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		want Open
	}{
		{"v4", `{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}`,
			Open{SID: "lv_VI97HAXpY6yYWAAAC", Upgrades: []string{"websocket"}, PingInterval: 25000, PingTimeout: 20000, MaxPayload: 1000000}},
		{"websocket only", `{"sid":"a","upgrades":[],"pingInterval":300,"pingTimeout":200,"maxPayload":100}`,
			Open{SID: "a", Upgrades: []string{}, PingInterval: 300, PingTimeout: 200, MaxPayload: 100}},
		{"v3 without maxPayload", `{"sid":"a","upgrades":["websocket"],"pingInterval":25000,"pingTimeout":5000}`,
			Open{SID: "a", Upgrades: []string{"websocket"}, PingInterval: 25000, PingTimeout: 5000}},
		{"extra fields", `{"sid":"a","pingInterval":1,"pingTimeout":2,"extra":{"x":[1]}}`,
			Open{SID: "a", PingInterval: 1, PingTimeout: 2}},
		{"last duplicate wins", `{"sid":"first","sid":"last","pingInterval":1,"pingTimeout":2}`,
			Open{SID: "last", PingInterval: 1, PingTimeout: 2}},
		{"keys are case-sensitive", `{"sid":"a","SID":"b","pingInterval":1,"pingTimeout":2}`,
			Open{SID: "a", PingInterval: 1, PingTimeout: 2}},
		{"null upgrades", `{"sid":"a","upgrades":null,"pingInterval":1,"pingTimeout":2}`,
			Open{SID: "a", PingInterval: 1, PingTimeout: 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseOpen([]byte(tt.in))
			if err != nil {
				t.Fatalf("ParseOpen: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseOpen = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseOpenMalformed(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		``,
		`null`,
		`[]`,
		`"sid"`,
		`{`,
		`{}`,
		`{"sid":"","pingInterval":1,"pingTimeout":2}`,
		`{"sid":null,"pingInterval":1,"pingTimeout":2}`,
		`{"SID":"a","pingInterval":1,"pingTimeout":2}`,
		`{"sid":1,"pingInterval":1,"pingTimeout":2}`,
		`{"sid":"a","pingTimeout":2}`,
		`{"sid":"a","pingInterval":null,"pingTimeout":2}`,
		`{"sid":"a","pingInterval":"1","pingTimeout":2}`,
		`{"sid":"a","pingInterval":1.5,"pingTimeout":2}`,
		`{"sid":"a","pingInterval":1e30,"pingTimeout":2}`,
		`{"sid":"a","pingInterval":-1,"pingTimeout":2}`,
		`{"sid":"a","pingInterval":1,"pingTimeout":2,"maxPayload":-5}`,
		`{"sid":"a","pingInterval":1,"pingTimeout":2,"upgrades":"websocket"}`,
		`{"sid":"a","pingInterval":1,"pingTimeout":2} trailing`,
	} {
		if o, err := ParseOpen([]byte(in)); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseOpen(%q) = %+v, %v; want ErrMalformed", in, o, err)
		}
	}
}
