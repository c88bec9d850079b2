package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// What signals mean to `agent run` and `agent hub` (README, "Signals and
// exit codes"):
//
//	SIGTERM, SIGINT   stop gracefully: take no new connections, let the
//	                  live ones end for up to --shutdown-timeout, reset the
//	                  rest, exit 0
//	a second one      stop now: reset what is left
//	SIGHUP            reopen the log file (--log-file) and say so; `agent
//	                  run --config` also reloads its file (cmd/agent/config.go);
//	                  it never stops them

// defaultShutdownTimeout is --shutdown-timeout's default.
const defaultShutdownTimeout = 30 * time.Second

// lifecycle is what the process's signals tell a command. The context the
// command runs with is done at the first SIGTERM or SIGINT.
type lifecycle struct {
	now context.Context // done at the second
	hup <-chan struct{} // receives each SIGHUP
}

type lifecycleKey struct{}

// watchSignals starts turning signals into a lifecycle; ctx is done at the
// first SIGTERM or SIGINT. release stops it.
func watchSignals() (ctx context.Context, release func()) {
	stopCtx, stop := context.WithCancel(context.Background())
	nowCtx, now := context.WithCancel(context.Background())
	hup := make(chan struct{}, 1)
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGTERM, os.Interrupt, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for s := range sigs {
			switch {
			case s == syscall.SIGHUP:
				select {
				case hup <- struct{}{}:
				default: // one is waiting already
				}
			case stopCtx.Err() == nil:
				stop()
			default:
				now()
			}
		}
	}()
	ctx = context.WithValue(stopCtx, lifecycleKey{}, &lifecycle{now: nowCtx, hup: hup})
	return ctx, func() {
		signal.Stop(sigs)
		close(sigs)
		<-done
		stop()
		now()
	}
}

// lifecycleOf returns the lifecycle of ctx; without one (tests) the
// context's end means stop now, and no SIGHUP comes.
func lifecycleOf(ctx context.Context) *lifecycle {
	if lc, ok := ctx.Value(lifecycleKey{}).(*lifecycle); ok {
		return lc
	}
	return &lifecycle{now: ctx}
}
