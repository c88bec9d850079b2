package pipe_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/sluicehq/sluice/agent/internal/testhub"
	"github.com/sluicehq/sluice/agent/pipe"
)

func TestMain(m *testing.M) { testhub.Main(m) }

// deadline bounds every blocking step of a test; no test waits this long
// unless something is broken.
const deadline = 10 * time.Second

// The fixture joins an app and a target through pipe.Run:
//
//	app ──TCP or TLS──> a ═pipe.Run═ b ──TCP──> target
//
// With mode "tcp" both a and b are plain TCP (the splice path); with "tls" the
// app's side is a TLS session (the buffered path).
type fixture struct {
	app, target       pipe.Stream // driven by the test
	appRaw, targetRaw *net.TCPConn
	a, b              pipe.Stream // handed to pipe.Run
	aRaw              *net.TCPConn
}

var modes = []string{"tcp", "tls"}

func newFixture(t *testing.T, mode string) *fixture {
	t.Helper()
	f := &fixture{}
	f.appRaw, f.aRaw = tcpPair(t)
	var bRaw *net.TCPConn
	bRaw, f.targetRaw = tcpPair(t)
	f.b, f.target = pipe.TCP(bRaw), pipe.TCP(f.targetRaw)
	switch mode {
	case "tcp":
		f.app, f.a = pipe.TCP(f.appRaw), pipe.TCP(f.aRaw)
	case "tls":
		client, server := tlsConfigs(t)
		appTLS, aTLS := tls.Client(f.appRaw, client), tls.Server(f.aRaw, server)
		// Finish the handshake first: tls.Conn.CloseWrite refuses to run
		// before it, and a pipe is always handed established sessions.
		errc := make(chan error, 1)
		go func() { errc <- aTLS.Handshake() }()
		if err := appTLS.Handshake(); err != nil {
			t.Fatalf("client handshake: %v", err)
		}
		if err := <-errc; err != nil {
			t.Fatalf("server handshake: %v", err)
		}
		f.app, f.a = pipe.TLS(appTLS, f.appRaw), pipe.TLS(aTLS, f.aRaw)
	default:
		t.Fatalf("unknown mode %q", mode)
	}
	for _, c := range []*net.TCPConn{f.appRaw, f.targetRaw} {
		c.SetDeadline(time.Now().Add(deadline))
	}
	return f
}

// run starts pipe.Run and returns a function that waits for its result.
func (f *fixture) run(t *testing.T, ctx context.Context, stats *pipe.Stats) func() pipe.Result {
	t.Helper()
	done := make(chan pipe.Result, 1)
	go func() { done <- pipe.Run(ctx, f.a, f.b, stats) }()
	t.Cleanup(func() {
		// Unblock and collect the pipe even when the test failed early.
		f.app.Abort()
		f.target.Abort()
		<-done
	})
	var res *pipe.Result
	return func() pipe.Result {
		t.Helper()
		if res != nil {
			return *res
		}
		select {
		case r := <-done:
			done <- r // for the cleanup
			res = &r
			return r
		case <-time.After(deadline):
			t.Fatal("pipe.Run did not return")
			return pipe.Result{}
		}
	}
}

func tcpPair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan *net.TCPConn, 1)
	go func() {
		c, _ := ln.AcceptTCP()
		accepted <- c
	}()
	client, err = net.DialTCP("tcp", nil, ln.Addr().(*net.TCPAddr))
	if err != nil {
		t.Fatal(err)
	}
	server = <-accepted
	if server == nil {
		client.Close()
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

// tlsConfigs returns a server configuration with a fresh self-signed
// certificate and a client configuration that trusts it.
func tlsConfigs(t *testing.T) (client, server *tls.Config) {
	t.Helper()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "pipe.test"},
		DNSNames:     []string{"pipe.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(cert)
	server = &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	client = &tls.Config{MinVersion: tls.VersionTLS13, ServerName: "pipe.test", RootCAs: roots}
	return client, server
}

func checkStats(t *testing.T, res pipe.Result, st *pipe.Stats, aToB, bToA int) {
	t.Helper()
	if res.AToB != int64(aToB) || res.BToA != int64(bToA) {
		t.Errorf("result counts %d a→b, %d b→a; want %d, %d", res.AToB, res.BToA, aToB, bToA)
	}
	if st != nil && (st.AToB.Load() != res.AToB || st.BToA.Load() != res.BToA) {
		t.Errorf("stats %d a→b, %d b→a differ from the result %d, %d", st.AToB.Load(), st.BToA.Load(), res.AToB, res.BToA)
	}
}

// checkClosed checks that the pipe closed its end of a connection.
func checkClosed(t *testing.T, name string, c *net.TCPConn) {
	t.Helper()
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("writing to %s after the pipe ended: %v, want net.ErrClosed", name, err)
	}
}

func TestHalfCloseFromApp(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			f := newFixture(t, mode)
			var st pipe.Stats
			wait := f.run(t, context.Background(), &st)
			req, resp := []byte("GET /half-close\n"), []byte("the target answers after the app's FIN\n")
			if _, err := f.app.Write(req); err != nil {
				t.Fatal(err)
			}
			if err := f.app.CloseWrite(); err != nil {
				t.Fatalf("app CloseWrite: %v", err)
			}
			got, err := io.ReadAll(f.target)
			if err != nil || !bytes.Equal(got, req) {
				t.Fatalf("target read %q, %v; want %q and EOF", got, err, req)
			}
			// The target's sending direction is still open.
			if _, err := f.target.Write(resp); err != nil {
				t.Fatalf("target write after EOF: %v", err)
			}
			if err := f.target.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			got, err = io.ReadAll(f.app)
			if err != nil || !bytes.Equal(got, resp) {
				t.Fatalf("app read %q, %v; want %q and EOF", got, err, resp)
			}
			res := wait()
			if res.Err != nil {
				t.Errorf("Result.Err = %v, want nil after a clean end", res.Err)
			}
			checkStats(t, res, &st, len(req), len(resp))
			checkClosed(t, "a", f.aRaw)
		})
	}
}

func TestHalfCloseFromTarget(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			f := newFixture(t, mode)
			wait := f.run(t, context.Background(), nil)
			banner, reply := []byte("220 banner, then FIN\n"), []byte("QUIT after EOF\n")
			if _, err := f.target.Write(banner); err != nil {
				t.Fatal(err)
			}
			if err := f.target.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(f.app)
			if err != nil || !bytes.Equal(got, banner) {
				t.Fatalf("app read %q, %v; want %q and EOF", got, err, banner)
			}
			if _, err := f.app.Write(reply); err != nil {
				t.Fatalf("app write after EOF: %v", err)
			}
			if err := f.app.CloseWrite(); err != nil {
				t.Fatal(err)
			}
			got, err = io.ReadAll(f.target)
			if err != nil || !bytes.Equal(got, reply) {
				t.Fatalf("target read %q, %v; want %q and EOF", got, err, reply)
			}
			res := wait()
			if res.Err != nil {
				t.Errorf("Result.Err = %v, want nil", res.Err)
			}
			checkStats(t, res, nil, len(reply), len(banner))
		})
	}
}

// established moves one message each way so that both copies are running.
func established(t *testing.T, f *fixture) {
	t.Helper()
	for _, d := range []struct {
		name     string
		from, to pipe.Stream
	}{{"app→target", f.app, f.target}, {"target→app", f.target, f.app}} {
		if _, err := d.from.Write([]byte("ping")); err != nil {
			t.Fatalf("%s: %v", d.name, err)
		}
		var b [4]byte
		if _, err := io.ReadFull(d.to, b[:]); err != nil || string(b[:]) != "ping" {
			t.Fatalf("%s: read %q, %v", d.name, b, err)
		}
	}
}

func TestResetPropagates(t *testing.T) {
	for _, mode := range modes {
		for _, from := range []string{"app", "target"} {
			t.Run(mode+"/from-"+from, func(t *testing.T) {
				f := newFixture(t, mode)
				wait := f.run(t, context.Background(), nil)
				established(t, f)
				resetter, peer := f.app, f.target
				if from == "target" {
					resetter, peer = f.target, f.app
				}
				if err := resetter.Abort(); err != nil {
					t.Fatal(err)
				}
				if _, err := io.ReadAll(peer); !pipe.IsReset(err) {
					t.Errorf("the peer of the resetting %s read %v, want a connection reset", from, err)
				}
				res := wait()
				if !pipe.IsReset(res.Err) {
					t.Errorf("Result.Err = %v, want a connection reset", res.Err)
				}
				checkStats(t, res, nil, 4, 4)
			})
		}
	}
}

func TestCancelAbortsBoth(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			f := newFixture(t, mode)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			wait := f.run(t, ctx, nil)
			established(t, f)
			cancel()
			res := wait()
			if !errors.Is(res.Err, context.Canceled) {
				t.Errorf("Result.Err = %v, want context.Canceled", res.Err)
			}
			for name, s := range map[string]pipe.Stream{"app": f.app, "target": f.target} {
				if _, err := io.ReadAll(s); !pipe.IsReset(err) {
					t.Errorf("%s read %v after cancel, want a connection reset", name, err)
				}
			}
		})
	}
}

// TestWriteErrorAborts: the target goes away while the app is still sending;
// writing to it fails, and the pipe resets the app.
func TestWriteErrorAborts(t *testing.T) {
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			f := newFixture(t, mode)
			wait := f.run(t, context.Background(), nil)
			established(t, f)
			if err := f.target.Close(); err != nil {
				t.Fatal(err)
			}
			// The target's close reaches the app as a FIN first.
			if got, err := io.ReadAll(f.app); err != nil || len(got) != 0 {
				t.Fatalf("app read %q, %v after the target closed; want EOF", got, err)
			}
			chunk := make([]byte, 16<<10)
			var err error
			for err == nil {
				_, err = f.app.Write(chunk)
			}
			if !pipe.IsReset(err) && !errors.Is(err, syscall.EPIPE) {
				t.Errorf("app write ended with %v, want a reset or broken pipe", err)
			}
			if res := wait(); res.Err == nil {
				t.Error("Result.Err is nil after a failed write")
			}
		})
	}
}

func TestStatsMoveDuringCopy(t *testing.T) {
	// Only the buffered path counts as it goes; splice counts at the end.
	f := newFixture(t, "tls")
	var st pipe.Stats
	wait := f.run(t, context.Background(), &st)
	msg := bytes.Repeat([]byte("x"), 1000)
	if _, err := f.app.Write(msg); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(f.target, make([]byte, len(msg))); err != nil {
		t.Fatal(err)
	}
	if !testhub.WaitFor(deadline, func() bool { return st.AToB.Load() == int64(len(msg)) }) {
		t.Errorf("Stats.AToB = %d while the pipe runs, want %d", st.AToB.Load(), len(msg))
	}
	if n := st.BToA.Load(); n != 0 {
		t.Errorf("Stats.BToA = %d, want 0", n)
	}
	f.app.CloseWrite()
	f.target.CloseWrite()
	checkStats(t, wait(), &st, len(msg), 0)
}

func TestLargeTransfer(t *testing.T) {
	const up, down = 64 << 20, 16 << 20
	for _, mode := range modes {
		t.Run(mode, func(t *testing.T) {
			f := newFixture(t, mode)
			for _, c := range []*net.TCPConn{f.appRaw, f.targetRaw} {
				c.SetDeadline(time.Now().Add(3 * deadline))
			}
			var st pipe.Stats
			wait := f.run(t, context.Background(), &st)
			type sums struct{ sent, got [32]byte }
			transfer := func(seed uint64, n int64, from, to pipe.Stream) <-chan sums {
				out := make(chan sums, 1)
				sendErr := make(chan error, 1)
				src := sha256.New()
				go func() {
					r := io.TeeReader(io.LimitReader(mrand.NewChaCha8(seedOf(seed)), n), src)
					_, err := io.Copy(from, r)
					sendErr <- errors.Join(err, from.CloseWrite())
				}()
				go func() {
					dst := sha256.New()
					_, err := io.Copy(dst, to)
					if err := errors.Join(err, <-sendErr); err != nil {
						t.Errorf("transfer of %d bytes: %v", n, err)
					}
					var s sums
					copy(s.sent[:], src.Sum(nil))
					copy(s.got[:], dst.Sum(nil))
					out <- s
				}()
				return out
			}
			upc := transfer(1, up, f.app, f.target)
			downc := transfer(2, down, f.target, f.app)
			for name, c := range map[string]<-chan sums{"app→target": upc, "target→app": downc} {
				s := <-c
				if s.sent != s.got {
					t.Errorf("%s: checksum %x of received data, sent %x", name, s.got, s.sent)
				}
			}
			res := wait()
			if res.Err != nil {
				t.Errorf("Result.Err = %v", res.Err)
			}
			checkStats(t, res, &st, up, down)
		})
	}
}

func seedOf(n uint64) (s [32]byte) {
	copy(s[:], fmt.Sprintf("pipe test seed %d", n))
	return s
}

func TestIsReset(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{io.EOF, false},
		{net.ErrClosed, false},
		{syscall.EPIPE, false},
		{syscall.ECONNRESET, true},
		{&net.OpError{Op: "read", Net: "tcp", Err: os.NewSyscallError("read", syscall.ECONNRESET)}, true},
		{fmt.Errorf("copy: %w", syscall.ECONNRESET), true},
	} {
		if got := pipe.IsReset(c.err); got != c.want {
			t.Errorf("IsReset(%v) = %v, want %v", c.err, got, c.want)
		}
	}
}
