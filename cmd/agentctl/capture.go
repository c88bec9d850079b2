package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/sluicehq/sluice/agent/api"
	"github.com/sluicehq/sluice/agent/api/apitype"
)

type captureFlags struct {
	file, format    string
	decrypted, wire bool
	portal, peer    string
	duration        time.Duration
	count           int
}

func captureCommand(e *env) *cobra.Command {
	var f captureFlags
	cmd := &cobra.Command{
		Use:   "capture -w FILE [--decrypted | --wire] [--portal NAME] [--peer NODE] [--duration D] [--count N]",
		Short: "Write what the agent's portals carry to a pcap file for tcpdump or Wireshark",
		Long: `Capture what this agent's portals carry and write it as a packet capture
(pcap, or pcapng with --format pcapng) that tcpdump and Wireshark open.

--decrypted (the default) writes each portal connection's plaintext as the
TCP stream between its real ends, as this agent sees them: on the inlet's
side from the app's address to the address it connected to (the inlet's
listener, or the service's own address for a transparent inlet); on the
outlet's side from the outlet's socket to the target. --wire writes the
agent's data connections to the hub (or to the peer agent, direct) with
their real addresses: the channel's sealed records, ciphertext only.

The packets are synthesized from the bytes the agent reports (handshake,
data with consistent sequence numbers, FIN or RST): they are not the frames
the kernel sent. A capture never slows the portals down: if this command
falls behind, the agent drops records, and the summary says how many.

-w - writes to standard output: agentctl capture -w - | wireshark -k -i -
It ends at Ctrl-C, after --duration, or once --count connections have
ended; the file is complete in every case. See docs/capture.md.`,
		Example: `  agentctl capture -w pg.pcap --portal pg --count 1
  agentctl capture --wire -w wire.pcapng --format pcapng --duration 30s
  agentctl capture -w - | wireshark -k -i -`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return e.capture(cmd.Context(), f, cmd.ErrOrStderr())
		},
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.file, "write", "w", "", "file to write, - for standard output (required)")
	fl.StringVar(&f.format, "format", "pcap", "file format: pcap or pcapng")
	fl.BoolVar(&f.decrypted, "decrypted", false, "capture what the portals carried, in plaintext (the default)")
	fl.BoolVar(&f.wire, "wire", false, "capture the agent's data connections to the hub or peer: ciphertext")
	fl.StringVar(&f.portal, "portal", "", "only this inlet or outlet")
	fl.StringVar(&f.peer, "peer", "", "only connections with this peer agent (node ID)")
	fl.DurationVar(&f.duration, "duration", 0, "stop after this long (0: until Ctrl-C)")
	fl.IntVar(&f.count, "count", 0, "stop once this many connections have ended (0: no limit)")
	cmd.MarkFlagRequired("write")
	cmd.MarkFlagsMutuallyExclusive("decrypted", "wire")
	return cmd
}

func (f captureFlags) query() (api.CaptureQuery, error) {
	switch {
	case f.duration < 0:
		return api.CaptureQuery{}, fmt.Errorf("--duration %s: must not be negative", f.duration)
	case f.count < 0:
		return api.CaptureQuery{}, fmt.Errorf("--count %d: must not be negative", f.count)
	case f.format != "pcap" && f.format != "pcapng":
		return api.CaptureQuery{}, fmt.Errorf("--format %q: want pcap or pcapng", f.format)
	}
	kind := apitype.CaptureDecrypted
	if f.wire {
		kind = apitype.CaptureWire
	}
	return api.CaptureQuery{Kind: kind, Portal: f.portal, Peer: f.peer}, nil
}

func (e *env) capture(ctx context.Context, f captureFlags, stderr io.Writer) error {
	q, err := f.query()
	if err != nil {
		return err
	}
	if f.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.duration)
		defer cancel()
	}
	stream, err := e.client().Capture(ctx, q)
	if err != nil {
		return err
	}
	defer stream.Close()
	out := e.out
	if f.file != "-" {
		// 0600: a decrypted capture holds what the portal protects.
		file, err := os.OpenFile(f.file, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return fmt.Errorf("open capture file: %w", err)
		}
		defer file.Close()
		out = file
	}
	bw := bufio.NewWriterSize(out, 256<<10)
	pw, flushNg, err := newPacketWriter(bw, f.format)
	if err != nil {
		return err
	}
	flush := func() error { return errors.Join(flushNg(), bw.Flush()) }
	if err := flush(); err != nil {
		return fmt.Errorf("write capture: %w", err)
	}
	fmt.Fprintf(stderr, "capturing %s on %s (Ctrl-C to stop)\n", q.Kind, what(q))
	s := newPcapSynth(pw)
	var (
		dropped uint64
		readErr error // the agent went away: what came before is kept
	)
	for f.count == 0 || s.Ended < f.count {
		rec, err := stream.Next()
		if err != nil {
			switch {
			case ctx.Err() != nil: // Ctrl-C or --duration
			case errors.Is(err, io.EOF):
				fmt.Fprintln(stderr, "the agent ended the capture")
			default:
				readErr = fmt.Errorf("read capture: %w", err)
			}
			break
		}
		if rec.Type == apitype.CaptureDropped {
			dropped = rec.Dropped
		}
		if err := s.add(rec); err != nil {
			return err
		}
		// Each record reaches the file (or the pipe to Wireshark) at once.
		if err := flush(); err != nil {
			return fmt.Errorf("write capture: %w", err)
		}
	}
	if err := flush(); err != nil {
		return fmt.Errorf("write capture: %w", err)
	}
	fmt.Fprintf(stderr, "%d packets of %d connections (%d ended) written", s.Packets, s.Conns, s.Ended)
	if dropped > 0 {
		fmt.Fprintf(stderr, "; %d records dropped by the agent (this capture fell behind): the file has gaps", dropped)
	}
	fmt.Fprintln(stderr)
	return readErr
}

func what(q api.CaptureQuery) string {
	s := "every portal"
	if q.Portal != "" {
		s = "portal " + q.Portal
	}
	if q.Peer != "" {
		s += ", peer " + q.Peer
	}
	return s
}
