package config

import (
	"os"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/term"
)

// NewLogger builds the process's logger on stderr: for people (console
// encoding, coloured levels) with EMBED_LOG_FORMAT=console, or auto when
// stderr is a terminal; for machines (JSON) otherwise. No line carries a
// stack trace of its own: the errors we log are expected ones (a missing
// model, a bad file, an unreachable dependency) and say what to do; a
// panic logs its stack explicitly.
func (c Config) NewLogger() (*zap.Logger, error) {
	zc := zap.NewProductionConfig()
	if c.LogFormat == "console" || (c.LogFormat == "auto" && term.IsTerminal(int(os.Stderr.Fd()))) {
		zc.Encoding = "console"
		zc.EncoderConfig = zap.NewDevelopmentEncoderConfig()
		zc.EncoderConfig.EncodeLevel = zapcore.CapitalColorLevelEncoder
	}
	zc.Level = c.LogLevel
	zc.Sampling = nil
	zc.DisableStacktrace = true
	zc.EncoderConfig.TimeKey = "ts"
	zc.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	return zc.Build()
}
