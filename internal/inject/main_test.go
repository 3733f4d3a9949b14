package inject

import (
	"fmt"
	"reflect"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

// equalJSON compares decoded objects.
func equalJSON(a, b any) bool { return reflect.DeepEqual(a, b) }
