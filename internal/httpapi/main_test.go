package httpapi_test

import (
	"os"
	"testing"

	"go.uber.org/goleak"

	"github.com/waywo/embed/internal/ollamatest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	ollamatest.StopShared()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			println("goleak:", err.Error())
			code = 1
		}
	}
	os.Exit(code)
}
