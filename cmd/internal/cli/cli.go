// Package cli holds what both commands share: logging set-up, reading
// secrets passed as @file, and turning errors into one clear line.
package cli

import (
	"fmt"
	"os"
	"strings"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// NewLogger builds the process logger: human-readable on stderr by default,
// JSON with format "json".
func NewLogger(level, format string) (*zap.Logger, error) {
	return NewLoggerTo(level, format, zapcore.Lock(os.Stderr))
}

// NewLoggerTo is NewLogger writing to w.
func NewLoggerTo(level, format string, w zapcore.WriteSyncer) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	var enc zapcore.Encoder
	switch format {
	case "console":
		cfg := zap.NewDevelopmentEncoderConfig()
		cfg.EncodeTime = zapcore.TimeEncoderOfLayout("15:04:05.000")
		enc = zapcore.NewConsoleEncoder(cfg)
	case "json":
		enc = zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	default:
		return nil, fmt.Errorf("--log-format %q: want console or json", format)
	}
	return zap.New(zapcore.NewCore(enc, w, lvl)), nil
}

// ReadSecret returns v, or the trimmed contents of the file v names when v is
// "@path".
func ReadSecret(flag, v string) (string, error) {
	if !strings.HasPrefix(v, "@") {
		return strings.TrimSpace(v), nil
	}
	data, err := os.ReadFile(v[1:])
	if err != nil {
		return "", fmt.Errorf("%s: read %w", flag, err)
	}
	return strings.TrimSpace(string(data)), nil
}
