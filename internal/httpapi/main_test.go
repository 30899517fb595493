package httpapi_test

import (
	"testing"

	"github.com/waywo/embed/internal/ollamatest"
)

func TestMain(m *testing.M) { ollamatest.RunTests(m) }
