package requestid_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chatguard/chatguard/internal/requestid"
)

func FuzzFromRequest(f *testing.F) {
	f.Add("abc-123", validTP, int64(1769802330123))
	f.Add("", validTP, int64(0))
	f.Add("bad id", "cc-"+traceID+"-"+parentID+"-01-future", int64(-1))
	f.Add(strings.Repeat("a", 129), "00-"+strings.Repeat("0", 32)+"-"+parentID+"-01", int64(1706645130123))
	f.Add("x\nforged=1", "ff-"+traceID+"-"+parentID+"-01", int64(253402300799999))
	f.Fuzz(func(t *testing.T, xrid, tp string, ms int64) {
		h := http.Header{}
		if xrid != "" {
			h.Set("X-Request-ID", xrid)
		}
		if tp != "" {
			h.Set("Traceparent", tp)
		}
		id := requestid.FromRequest(h, time.UnixMilli(ms))
		if !requestid.Valid(id) {
			t.Fatalf("FromRequest(%q, %q) = %q, not Valid", xrid, tp, id)
		}
		switch {
		case requestid.Valid(xrid):
			if id != xrid {
				t.Fatalf("valid X-Request-ID %q came back as %q", xrid, id)
			}
		default:
			if tid, ok := requestid.TraceID(tp); ok {
				if id != tid || id != tp[3:35] {
					t.Fatalf("traceparent %q gave %q, want its trace id", tp, id)
				}
			} else if !strings.HasPrefix(id, "req_") {
				t.Fatalf("no usable incoming id, got %q, want a new one", id)
			}
		}
	})
}

func FuzzTraceID(f *testing.F) {
	f.Add(validTP)
	f.Add("cc-" + traceID + "-" + parentID + "-01-what-the-future-will-be-like")
	f.Add(validTP + "-x")
	f.Add("ff-" + traceID + "-" + parentID + "-01")
	f.Add("00-" + strings.ToUpper(traceID) + "-" + parentID + "-01")
	f.Add("")
	f.Fuzz(func(t *testing.T, tp string) {
		tid, ok := requestid.TraceID(tp)
		if !ok {
			if tid != "" {
				t.Fatalf("TraceID(%q) = %q with ok=false", tp, tid)
			}
			return
		}
		if !requestid.Valid(tid) || len(tid) != 32 || tid != tp[3:35] {
			t.Fatalf("TraceID(%q) = %q", tp, tid)
		}
		if strings.Trim(tid, "0123456789abcdef") != "" || strings.Trim(tid, "0") == "" {
			t.Fatalf("TraceID(%q) = %q: not lower hex or all zero", tp, tid)
		}
		parent := tp[36:52]
		if strings.Trim(parent, "0123456789abcdef") != "" || strings.Trim(parent, "0") == "" {
			t.Fatalf("TraceID(%q) accepted parent id %q", tp, parent)
		}
		version := tp[:2]
		if version == "ff" || strings.Trim(version+tp[53:55], "0123456789abcdef") != "" {
			t.Fatalf("TraceID(%q) accepted version %q / flags %q", tp, version, tp[53:55])
		}
		if len(tp) != 55 && (version == "00" || tp[55] != '-') {
			t.Fatalf("TraceID(%q) accepted %d bytes for version %s", tp, len(tp), version)
		}
	})
}
