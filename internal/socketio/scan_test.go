package socketio

import (
	"strings"
	"testing"
)

func TestEventName(t *testing.T) {
	t.Parallel()
	tests := []struct {
		data string
		want string
		ok   bool
	}{
		{`["send-message",{"conversationId":"c1"}]`, "send-message", true},
		{` [ "typing" ] `, "typing", true},
		{`["\u0073end-message"]`, "send-message", true},
		{`["a\"b"]`, `a"b`, true},
		{`["é😀"]`, "é😀", true},
		{`[""]`, "", true},
		{`[42,"x"]`, "", false},
		{`[]`, "", false},
		{`[{"a":1}]`, "", false},
		{`{"a":1}`, "", false},
		{`"x"`, "", false},
		{``, "", false},
		{`["unterminated`, "", false},
		{`[`, "", false},
	}
	for _, tt := range tests {
		got, ok := EventName([]byte(tt.data))
		if got != tt.want || ok != tt.ok {
			t.Errorf("EventName(%s) = %q, %v; want %q, %v", tt.data, got, ok, tt.want, tt.ok)
		}
	}
}

func TestEventArg(t *testing.T) {
	t.Parallel()
	data := `["send-message", {"conversationId":"c1","nested":[1,{"x":"]"}]} ,"two\"]",3.5e2,null,[] ]`
	tests := []struct {
		i    int
		want string
		ok   bool
	}{
		{-1, "", false},
		{0, `{"conversationId":"c1","nested":[1,{"x":"]"}]}`, true},
		{1, `"two\"]"`, true},
		{2, `3.5e2`, true},
		{3, `null`, true},
		{4, `[]`, true},
		{5, "", false},
	}
	for _, tt := range tests {
		got, ok := EventArg([]byte(data), tt.i)
		if string(got) != tt.want || ok != tt.ok {
			t.Errorf("EventArg(%d) = %s, %v; want %s, %v", tt.i, got, ok, tt.want, tt.ok)
		}
	}
	for _, bad := range []string{``, `{}`, `[`, `["a"`, `["a",`, `["a" 1]`, `["a",{"b":[}`} {
		if got, ok := EventArg([]byte(bad), 0); ok {
			t.Errorf("EventArg(%q, 0) = %s, true; want false", bad, got)
		}
	}
}

// An event's argument that is itself the id: join("c-42"), join(42).
func TestScalar(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{`"c-42"`: "c-42", ` 42 `: "42", `-1.5`: "-1.5", `"a\u0062"`: "ab"} {
		if got, ok := Scalar([]byte(in)); !ok || got != want {
			t.Errorf("Scalar(%s) = %q, %v; want %q", in, got, ok, want)
		}
	}
	for _, in := range []string{`{"conversationId":"c"}`, `["c"]`, `true`, `null`, `"c" "d"`, `"unended`, ``} {
		if got, ok := Scalar([]byte(in)); ok {
			t.Errorf("Scalar(%s) = %q, want none", in, got)
		}
	}
}

func TestStringField(t *testing.T) {
	t.Parallel()
	tests := []struct {
		obj, field string
		want       string
		ok         bool
	}{
		{`{"conversationId":"c-42","text":"hi"}`, "conversationId", "c-42", true},
		{`{"text":"hi","conversationId":123}`, "conversationId", "123", true},
		{`{"conversationId":-1.50e3}`, "conversationId", "-1.50e3", true},
		{` { "a" : { "conversationId" : "nested" } , "conversationId" : "top" } `, "conversationId", "top", true},
		{`{"a":{"conversationId":"nested"}}`, "conversationId", "", false},
		{`{"conversationId":"first","conversationId":"last"}`, "conversationId", "last", true},
		{`{"conversationId":"first","conversationId":null}`, "conversationId", "", false},
		{`{"conversation\u0049d":"escaped key"}`, "conversationId", "escaped key", true},
		{`{"conversationId":"esc\u0061ped \"value\""}`, "conversationId", `escaped "value"`, true},
		{`{"conversationId":true}`, "conversationId", "", false},
		{`{"conversationId":["a"]}`, "conversationId", "", false},
		{`{"conversationId":{"a":"b"}}`, "conversationId", "", false},
		{`{}`, "conversationId", "", false},
		{`["conversationId","x"]`, "conversationId", "", false},
		{`"conversationId"`, "conversationId", "", false},
		{``, "conversationId", "", false},
		{`{"conversationId"`, "conversationId", "", false},
		{`{"conversationId":`, "conversationId", "", false},
		{`{"conversationId" "x"}`, "conversationId", "", false},
		{`{"a":"]}","conversationId":"after tricky string"}`, "conversationId", "after tricky string", true},
	}
	for _, tt := range tests {
		got, ok := StringField([]byte(tt.obj), tt.field)
		if got != tt.want || ok != tt.ok {
			t.Errorf("StringField(%s, %q) = %q, %v; want %q, %v", tt.obj, tt.field, got, ok, tt.want, tt.ok)
		}
	}
}

// TestScanDeep checks that the scanner handles nesting far deeper than any
// recursion would like, in one pass.
func TestScanDeep(t *testing.T) {
	t.Parallel()
	deep := `["x",` + strings.Repeat(`[`, 1<<20) + strings.Repeat(`]`, 1<<20) + `,"y"]`
	got, ok := EventArg([]byte(deep), 1)
	if !ok || string(got) != `"y"` {
		t.Errorf("EventArg(deep, 1) = %.20s, %v", got, ok)
	}
	unbalanced := `{"a":` + strings.Repeat(`[`, 1<<20) + `,"conversationId":"x"}`
	if got, ok := StringField([]byte(unbalanced), "conversationId"); ok {
		t.Errorf("StringField(unbalanced) = %q, true", got)
	}
}
