package channel

import (
	"fmt"
	"io"
	"syscall"
	"testing"
	"time"
)

// What the record layer costs per record, for bulk (128 KiB) and small
// records. Read them as comparisons between two versions of this code
// (benchstat), never as absolute speeds:
//
//	go test -run '^$' -bench . -count 10 ./agent/channel/ > new.txt
//	benchstat old.txt new.txt

var benchSizes = []int{1, 64, 1 << 10, 16 << 10, MaxRecord}

// BenchmarkSealOpen seals a data record in place and opens it again through
// the reader's own path (header checks, nonce, authentication), in memory:
// the CPU cost of one record at both ends, without system calls.
func BenchmarkSealOpen(b *testing.B) {
	km := exportedKeys(b)
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			out, err := newDirection(km[:32])
			if err != nil {
				b.Fatal(err)
			}
			in, err := newDirection(km[:32])
			if err != nil {
				b.Fatal(err)
			}
			c := &Conn{out: out, in: in, idle: &idleReader{}}
			bp := getBuf(true)
			defer putBuf(bp)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			b.ResetTimer()
			defer reportCPU(b, cpuTime())
			for range b.N {
				rec, err := c.seal(recData, *bp, size)
				if err != nil {
					b.Fatal(err)
				}
				c.buf, c.r, c.w = bp, 0, len(rec)
				typ, p, err := c.next()
				if err != nil || typ != recData || len(p) != size {
					b.Fatalf("opened type %d, %d bytes, %v; want data of %d bytes", typ, len(p), err, size)
				}
			}
			c.buf = nil
		})
	}
}

// BenchmarkStream writes data records of one size on a channel over
// loopback TCP, one Write (one record, one write(2)) each, while the other
// end reads them: the record layer with its system calls.
func BenchmarkStream(b *testing.B) {
	for _, size := range []int{64, 1 << 10, MaxRecord} {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			c, s := conns(b)
			msg := make([]byte, size)
			done := make(chan error, 1)
			go func() {
				_, err := io.Copy(io.Discard, s)
				done <- err
			}()
			b.SetBytes(int64(size))
			b.ResetTimer()
			defer reportCPU(b, cpuTime())
			for range b.N {
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
			}
			if err := c.CloseWrite(); err != nil {
				b.Fatal(err)
			}
			if err := <-done; err != nil {
				b.Fatal(err)
			}
		})
	}
}

// cpuTime is the CPU time the process has used, user and system.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the process's CPU time per operation since start.
func reportCPU(b *testing.B, start time.Duration) {
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
}
