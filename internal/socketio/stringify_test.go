package socketio

import "testing"

// TestStringify compares appendStringify with JSON.stringify(JSON.parse(in))
// as Node.js 20 computes it.
func TestStringify(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{`1.0`, `1`},
		{`1E5`, `100000`},
		{`1e21`, `1e+21`},
		{`1e+21`, `1e+21`},
		{`1e-7`, `1e-7`},
		{`-0`, `0`},
		{`0.0`, `0`},
		{`0`, `0`},
		{`-12`, `-12`},
		{`1e-400`, `0`},
		{`1e400`, `null`},
		{`-1e400`, `null`},
		{`12345678901234567890`, `12345678901234567000`},
		{`0.1`, `0.1`},
		{`2.5e-5`, `0.000025`},
		{`123.456e2`, `12345.6`},
		{`-0.0000001`, `-1e-7`},
		{`9007199254740993`, `9007199254740992`},
		{`1.7976931348623157e308`, `1.7976931348623157e+308`},
		{`4.9e-324`, `5e-324`},
		{`"\u0041\/\u003c\u003e\u0026\u2028\u2029"`, "\"A/<>&\u2028\u2029\""},
		{`"\ud83d\ude00"`, `"😀"`},
		{`"\uD83D\uDE00"`, `"😀"`},
		{`"\ud800"`, `"\ud800"`},
		{`"\udc00x"`, `"\udc00x"`},
		{`"\ud800\u0041"`, `"\ud800A"`},
		{`"\uDBFF"`, `"\udbff"`},
		{`"\u0000\u001f\u007f\b\f\n\r\t"`, "\"\\u0000\\u001f\x7f\\b\\f\\n\\r\\t\""},
		{"\"raw \xff byte\"", "\"raw \uFFFD byte\""},
		{` [ 1 , { "a" : "b" } , [ ] , { } , true , false , null ] `, `[1,{"a":"b"},[],{},true,false,null]`},
		// Not JavaScript's answer, which is {"a":2}: keys keep their order and duplicates.
		{`{"a":1,"a":2}`, `{"a":1,"a":2}`},
	}
	for _, tt := range tests {
		got, ok := appendStringify(nil, []byte(tt.in))
		if !ok || string(got) != tt.want {
			t.Errorf("appendStringify(%s) = %s, %v; want %s", tt.in, got, ok, tt.want)
		}
	}
	for _, bad := range []string{``, `{`, `[1,]`, `"\x01"`, `01`, `1 2`} {
		if got, ok := appendStringify([]byte("keep"), []byte(bad)); ok || string(got) != "keep" {
			t.Errorf("appendStringify(%q) = %q, %v; want dst unchanged and false", bad, got, ok)
		}
	}
}
