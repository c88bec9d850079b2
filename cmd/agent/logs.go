package main

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/sluicehq/sluice/cmd/internal/cli"
)

// logFlags are the logging flags of both commands.
type logFlags struct {
	level, format, file string
	// reload, once set, runs at each SIGHUP after the log file is
	// reopened (agent run --config).
	reload atomic.Pointer[func()]
}

func (l *logFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&l.level, "log-level", "info", "log level: debug, info, warn or error")
	cmd.Flags().StringVar(&l.format, "log-format", "console", "log format: console or json")
	cmd.Flags().StringVar(&l.file, "log-file", "", "append the log to this file instead of stderr; SIGHUP reopens it (for logrotate)")
}

// start builds the logger and answers SIGHUP (reopening the log file) for
// the life of the command run from ctx; stop syncs and closes the log.
func (l *logFlags) start(ctx context.Context) (log *zap.Logger, stop func(), err error) {
	log, f, err := l.open()
	if err != nil {
		return nil, nil, err
	}
	hup := make(chan struct{})
	go onHangup(lifecycleOf(ctx), f, log, hup, &l.reload)
	return log, func() {
		close(hup)
		log.Sync()
		if f != nil {
			f.Close()
		}
	}, nil
}

// open builds the logger; the file is nil without --log-file.
func (l *logFlags) open() (*zap.Logger, *logFile, error) {
	if l.file == "" {
		log, err := cli.NewLogger(l.level, l.format)
		return log, nil, err
	}
	f := &logFile{path: l.file}
	if err := f.Reopen(); err != nil {
		return nil, nil, err
	}
	log, err := cli.NewLoggerTo(l.level, l.format, f)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return log, f, nil
}

// logFile is a log file that can be reopened under its name, after a
// rotation moved it away.
type logFile struct {
	path string

	mu sync.Mutex // guards f
	f  *os.File
}

var _ zapcore.WriteSyncer = (*logFile)(nil)

// Reopen opens the file at its path again (creating it, 0600) and closes
// the one written so far.
func (l *logFile) Reopen() error {
	f, err := os.OpenFile(l.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("--log-file: %w", err)
	}
	l.mu.Lock()
	old := l.f
	l.f = f
	l.mu.Unlock()
	if old != nil {
		old.Close()
	}
	return nil
}

func (l *logFile) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Write(p)
}

func (l *logFile) Sync() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Sync()
}

// Close closes the file.
func (l *logFile) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Close()
}

// onHangup answers each SIGHUP until done is closed: it reopens the log
// file, if there is one, and logs what it did.
func onHangup(lc *lifecycle, f *logFile, log *zap.Logger, done <-chan struct{}, reload *atomic.Pointer[func()]) {
	for {
		select {
		case <-done:
			return
		case <-lc.hup:
		}
		if r := reload.Load(); r != nil {
			reopenLog(f, log)
			(*r)()
			continue
		}
		if f == nil {
			log.Info("SIGHUP: nothing to do (no --log-file to reopen, no --config to reload)")
			continue
		}
		if err := f.Reopen(); err != nil {
			log.Error("SIGHUP: reopening the log file failed; still writing to the old one", zap.Error(err))
			continue
		}
		log.Info("SIGHUP: log file reopened (no --config to reload)", zap.String("log_file", f.path))
	}
}

// reopenLog reopens the log file, if there is one, for a SIGHUP that also
// reloads the configuration.
func reopenLog(f *logFile, log *zap.Logger) {
	if f == nil {
		return
	}
	if err := f.Reopen(); err != nil {
		log.Error("SIGHUP: reopening the log file failed; still writing to the old one", zap.Error(err))
		return
	}
	log.Info("SIGHUP: log file reopened", zap.String("log_file", f.path))
}
