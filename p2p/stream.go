package p2p

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/fedgrid/fedgrid/wire"
)

// Streamed responses. A protocol whose response is wire.Frames carries one
// request (as Call), then one envelope: an error, or an empty body meaning
// that the rest of the stream is the response's bytes (frames the caller
// decodes with its own limits). Every write and read must make progress
// within the descriptor's Idle; the whole exchange ends by its Timeout.

// StreamFunc decides a streamed request: an error is answered as in Handle;
// otherwise the returned function writes the stream.
type StreamFunc[Req any] func(ctx context.Context, from peer.ID, req *Req) (func(ctx context.Context, w io.Writer) error, error)

// idleConn refreshes a stream's deadline before each read or write: a
// peer that stops for longer than idle is cut off.
type idleConn struct {
	s    network.Stream
	idle time.Duration
	end  time.Time // the exchange's deadline
}

func (c *idleConn) next() time.Time {
	if d := time.Now().Add(c.idle); d.Before(c.end) {
		return d
	}
	return c.end
}

func (c *idleConn) Write(b []byte) (int, error) {
	_ = c.s.SetWriteDeadline(c.next())
	return c.s.Write(b)
}

func (c *idleConn) Read(b []byte) (int, error) {
	_ = c.s.SetReadDeadline(c.next())
	return c.s.Read(b)
}

// ServeStream registers fn for the streamed protocol d on p. When d checks
// its caller first, allow runs before the request is read.
func ServeStream[Req any](p *Peer, d wire.Protocol[Req, wire.Frames], allow func(peer.ID) error, fn StreamFunc[Req]) {
	lim := LimitsOf(d.Descriptor)
	if d.CheckFirst {
		lim.Allow = allow
	}
	lim = lim.withDefaults()
	idle := d.Idle
	if idle <= 0 {
		idle = lim.Timeout
	}
	base := p.Context()
	p.Host.SetStreamHandler(p.Protocol(d.Name), func(s network.Stream) {
		defer s.Close()
		end := time.Now().Add(lim.Timeout)
		ctx, cancel := context.WithDeadline(base, end)
		defer cancel()
		stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
		defer stop()
		c := &idleConn{s: s, idle: idle, end: end}
		var write func(context.Context, io.Writer) error
		env := serve(ctx, streamRW{c, s}, lim, func(ctx context.Context, from peer.ID, req *Req) (*struct{}, error) {
			w, err := fn(ctx, from, req)
			write = w
			return &struct{}{}, err
		})
		b, err := json.Marshal(env)
		if err != nil || WriteMsg(c, b) != nil || env.Error != nil {
			if err != nil || env.Error == nil {
				_ = s.Reset()
			}
			return
		}
		bw := bufio.NewWriterSize(c, 64<<10)
		if err := write(ctx, bw); err != nil {
			_ = s.Reset()
			return
		}
		if err := bw.Flush(); err != nil {
			_ = s.Reset()
		}
	})
}

// streamRW lets serve read the request through the idle deadline.
type streamRW struct {
	*idleConn
	network.Stream
}

func (s streamRW) Read(b []byte) (int, error)  { return s.idleConn.Read(b) }
func (s streamRW) Write(b []byte) (int, error) { return s.idleConn.Write(b) }

// OpenStream calls the streamed protocol d of peer `to` and returns the
// response's bytes once the peer accepted the request (its refusal is an
// *Error). The caller closes the reader; ctx and d's Timeout bound the
// whole exchange, d's Idle every read.
func OpenStream[Req any](ctx context.Context, p *Peer, to peer.ID, d wire.Protocol[Req, wire.Frames], req *Req) (io.ReadCloser, error) {
	lim := LimitsOf(d.Descriptor).withDefaults()
	idle := d.Idle
	if idle <= 0 {
		idle = lim.Timeout
	}
	ctx, cancel := context.WithTimeout(ctx, lim.Timeout)
	b, err := json.Marshal(req)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("encode request: %w", err)
	}
	if len(b) > lim.MaxRequest {
		cancel()
		return nil, fmt.Errorf("%w: request of %d bytes, limit %d", ErrTooLarge, len(b), lim.MaxRequest)
	}
	pid := p.Protocol(d.Name)
	s, err := p.Host.NewStream(network.WithAllowLimitedConn(ctx, string(pid)), to, pid)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("%w: %s to %s: %w", ErrNoStream, pid, to.ShortString(), err)
	}
	end, _ := ctx.Deadline()
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	rc := &streamReader{c: &idleConn{s: s, idle: idle, end: end}, cancel: cancel, stop: stop}
	rc.r = bufio.NewReaderSize(rc.c, 64<<10)
	fail := func(err error) (io.ReadCloser, error) {
		_ = s.Reset()
		rc.close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s to %s: %w", pid, to.ShortString(), ctx.Err())
		}
		return nil, err
	}
	if err := WriteMsg(rc.c, b); err != nil {
		return fail(fmt.Errorf("send request: %w", err))
	}
	if err := s.CloseWrite(); err != nil {
		return fail(fmt.Errorf("send request: %w", err))
	}
	raw, err := ReadMsg(rc.r, MaxEnvelope)
	if err != nil {
		return fail(fmt.Errorf("read response: %w", err))
	}
	var env envelope
	if err := json.Unmarshal(raw, &env); err != nil {
		return fail(fmt.Errorf("%w: response: %v", ErrMalformed, err))
	}
	if env.Error != nil {
		_ = s.Close()
		rc.close()
		return nil, env.Error
	}
	return rc, nil
}

// MaxEnvelope bounds the envelope before a streamed response.
const MaxEnvelope = 64 << 10

type streamReader struct {
	c      *idleConn
	r      *bufio.Reader
	cancel context.CancelFunc
	stop   func() bool
}

func (r *streamReader) Read(b []byte) (int, error) {
	n, err := r.r.Read(b)
	if err != nil && !errors.Is(err, io.EOF) {
		var se interface{ Timeout() bool }
		if errors.As(err, &se) && se.Timeout() {
			return n, fmt.Errorf("no data for %s: %w", r.c.idle, err)
		}
	}
	return n, err
}

func (r *streamReader) close() {
	r.stop()
	r.cancel()
}

// Close ends the exchange (resetting the stream if the response was not
// read to its end).
func (r *streamReader) Close() error {
	_ = r.c.s.Reset()
	r.close()
	return nil
}
