package testenv

import (
	"context"
	"fmt"
	"strings"
	"sync"
)

// maxOutput is how much of a process's output is kept in memory; the log
// file has all of it.
const maxOutput = 1 << 20

// outputBuffer keeps the last maxOutput bytes written to it and wakes
// waiters on every write.
type outputBuffer struct {
	mu      sync.Mutex // guards the following
	buf     []byte
	dropped int64         // bytes dropped from the front so far
	changed chan struct{} // closed and replaced on every write
}

func newOutputBuffer() *outputBuffer {
	return &outputBuffer{changed: make(chan struct{})}
}

// Write appends p, trimming the front when twice the limit is reached so
// that trimming costs amortized O(1) per byte.
func (b *outputBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if len(b.buf) > 2*maxOutput {
		cut := len(b.buf) - maxOutput
		b.buf = append(b.buf[:0], b.buf[cut:]...)
		b.dropped += int64(cut)
	}
	close(b.changed)
	b.changed = make(chan struct{})
	return len(p), nil
}

// String returns the last maxOutput bytes.
func (b *outputBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.buf) > maxOutput {
		return string(b.buf[len(b.buf)-maxOutput:])
	}
	return string(b.buf)
}

// find looks for substr in what was written from offset from (an absolute
// position) on. It returns whether it was found, where to search from next
// time, and a channel closed on the next write.
func (b *outputBuffer) find(substr string, from int64) (bool, int64, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	start := from - b.dropped
	if start < 0 {
		start = 0
	}
	if start > int64(len(b.buf)) {
		start = int64(len(b.buf))
	}
	found := strings.Contains(string(b.buf[start:]), substr)
	// Resume where a match could still begin.
	next := b.dropped + int64(len(b.buf)) - int64(len(substr)) + 1
	if next < from {
		next = from
	}
	return found, next, b.changed
}

// wait blocks until substr was written, done is closed, or ctx ends.
func (b *outputBuffer) wait(ctx context.Context, substr string, done <-chan struct{}) error {
	var from int64
	for {
		found, next, changed := b.find(substr, from)
		if found {
			return nil
		}
		from = next
		select {
		case <-changed:
		case <-done:
			if found, _, _ := b.find(substr, from); found {
				return nil
			}
			return errExited
		case <-ctx.Done():
			return fmt.Errorf("wait for output %q: %w", substr, ctx.Err())
		}
	}
}

// tail returns at most the last n bytes of s, marked when cut.
func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
