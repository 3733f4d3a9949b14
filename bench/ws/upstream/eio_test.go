package main

import "testing"

func TestSocketIOReply(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, in string
		want     string // "" = no reply; "SID" stands for any id
	}{
		{"connect", `0`, `0{"sid":"SID"}`},
		{"connect with auth", `0{"token":"x"}`, `0{"sid":"SID"}`},
		{"connect to a namespace", `0/chat,`, `0/chat,{"sid":"SID"}`},
		{"event with ack", `217["send-message",{"text":"hi"}]`, `317[{"text":"hi"}]`},
		{"event with ack, namespace", `2/chat,5["typing"]`, `3/chat,5[]`},
		{"event with ack, escaped name", `23["a\"b",1,2]`, `33[1,2]`},
		{"event without ack", `2["typing",{"c":1}]`, `2["typing",{"c":1}]`},
		{"ack from the client", `31[]`, ``},
		{"disconnect", `1`, ``},
		{"malformed event with ack", `27{}`, ``},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := string(socketIOReply([]byte(tt.in)))
			if tt.want == "" {
				if got != "" {
					t.Fatalf("socketIOReply(%q) = %q, want none", tt.in, got)
				}
				return
			}
			want := "4" + tt.want
			if i := len(want) - len(`SID"}`); want[i:] == `SID"}` {
				// An id of 20 URL-safe characters.
				if len(got) != len(want)-3+20 || got[:i] != want[:i] || got[len(got)-2:] != `"}` {
					t.Fatalf("socketIOReply(%q) = %q, want %q with a 20-character id", tt.in, got, want)
				}
				return
			}
			if got != want {
				t.Fatalf("socketIOReply(%q) = %q, want %q", tt.in, got, want)
			}
		})
	}
}
