package p2p

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/fedgrid/fedgrid/internal/strictjson"
	"github.com/fedgrid/fedgrid/wire"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// Limits bound one request/response exchange.
type Limits struct {
	MaxRequest  int           // bytes of one request message; default 1 MiB
	MaxResponse int           // bytes of one response message; default 1 MiB
	Timeout     time.Duration // whole exchange; default 30 s
	// Allow, when set, is asked before the request is read: a peer it
	// refuses gets the refusal without the server reading (and holding in
	// memory) a request of up to MaxRequest bytes.
	Allow func(from peer.ID) error
}

func (l Limits) withDefaults() Limits {
	if l.MaxRequest <= 0 {
		l.MaxRequest = 1 << 20
	}
	if l.MaxResponse <= 0 {
		l.MaxResponse = 1 << 20
	}
	if l.Timeout <= 0 {
		l.Timeout = 30 * time.Second
	}
	return l
}

// Sentinel errors of the framing layer.
var (
	// ErrTooLarge: a message's announced length is over the limit.
	ErrTooLarge = errors.New("message over the size limit")
	// ErrMalformed: a message could not be decoded.
	ErrMalformed = errors.New("malformed message")
	// ErrNoStream: Call could not open a stream to the peer (no connection,
	// or the peer does not speak the protocol): the request was not sent.
	ErrNoStream = errors.New("cannot open stream")
)

// Error is an error answered by the remote peer. Code is a stable machine code
// (see the Code* constants); Message is for people.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Message + " (" + e.Code + ")" }

// Codes answered by handlers.
const (
	CodeBadRequest   = "bad_request"
	CodeTooLarge     = "too_large"
	CodeUnauthorized = "unauthorized"
	CodeForbidden    = "forbidden"
	CodeNotFound     = "not_found"
	CodeConflict     = "conflict"
	// CodeInsufficientBudget: the caller's privacy budget does not cover it.
	CodeInsufficientBudget = "insufficient_budget"
	CodeStale              = "stale"
	CodeUnavailable        = "unavailable"
	CodeInternal           = "internal"
)

// Errorf makes a remote-visible error.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// IsCode reports whether err is a remote Error with the given code.
func IsCode(err error, code string) bool {
	var e *Error
	return errors.As(err, &e) && e.Code == code
}

// envelope is what travels back: exactly one of Body or Error.
type envelope struct {
	Body  json.RawMessage `json:"body,omitempty"`
	Error *Error          `json:"error,omitempty"`
}

// WriteMsg writes one length-prefixed message.
func WriteMsg(w io.Writer, b []byte) error {
	var hdr [binary.MaxVarintLen64]byte
	n := binary.PutUvarint(hdr[:], uint64(len(b)))
	if _, err := w.Write(hdr[:n]); err != nil {
		return err
	}
	_, err := w.Write(b)
	return err
}

// ReadMsg reads one length-prefixed message of at most max bytes.
func ReadMsg(r *bufio.Reader, max int) ([]byte, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("%w: bad length prefix: %v", ErrMalformed, err)
	}
	if n > uint64(max) {
		return nil, fmt.Errorf("%w: %d bytes announced, limit %d", ErrTooLarge, n, max)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, fmt.Errorf("%w: truncated message: %v", ErrMalformed, err)
	}
	return b, nil
}

// HandlerFunc serves one request from a remote peer. Return an *Error to
// answer with a specific code; any other error is answered as "internal" with
// its text.
type HandlerFunc[Req, Resp any] func(ctx context.Context, from peer.ID, req *Req) (*Resp, error)

// Handle registers fn for protocol pid on h. Every stream carries one request
// and one response; oversized or malformed requests get an error answer and
// the stream is closed. base bounds the lifetime of every handler call.
func Handle[Req, Resp any](base context.Context, h host.Host, pid protocol.ID, lim Limits, fn HandlerFunc[Req, Resp]) {
	lim = lim.withDefaults()
	h.SetStreamHandler(pid, func(s network.Stream) {
		defer s.Close()
		_ = s.SetDeadline(time.Now().Add(lim.Timeout))
		ctx, cancel := context.WithTimeout(base, lim.Timeout)
		defer cancel()
		resp := serve(ctx, s, lim, fn)
		b, err := json.Marshal(resp)
		if err != nil {
			b, _ = json.Marshal(envelope{Error: Errorf(CodeInternal, "encode response: %v", err)})
		}
		if len(b) > lim.MaxResponse {
			b, _ = json.Marshal(envelope{Error: Errorf(CodeTooLarge, "response of %d bytes is over the limit of %d", len(b), lim.MaxResponse)})
		}
		if err := WriteMsg(s, b); err != nil {
			_ = s.Reset()
		}
	})
}

func serve[Req, Resp any](ctx context.Context, s network.Stream, lim Limits, fn HandlerFunc[Req, Resp]) envelope {
	if lim.Allow != nil {
		if err := lim.Allow(s.Conn().RemotePeer()); err != nil {
			// Discard (never hold) what the peer sends, so that a large
			// request is not stuck on flow control and its sender hears
			// the refusal rather than a timeout.
			_, _ = io.Copy(io.Discard, io.LimitReader(s, int64(lim.MaxRequest)+binary.MaxVarintLen64))
			return errorEnvelope(err)
		}
	}
	raw, err := ReadMsg(bufio.NewReader(io.LimitReader(s, int64(lim.MaxRequest)+binary.MaxVarintLen64)), lim.MaxRequest)
	if err != nil {
		if errors.Is(err, ErrTooLarge) {
			return envelope{Error: Errorf(CodeTooLarge, "request refused: %v", err)}
		}
		return envelope{Error: Errorf(CodeBadRequest, "request refused: %v", err)}
	}
	var req Req
	if err := DecodeStrict(raw, &req); err != nil {
		return envelope{Error: Errorf(CodeBadRequest, "request refused: %v", err)}
	}
	resp, err := fn(ctx, s.Conn().RemotePeer(), &req)
	if err != nil {
		return errorEnvelope(err)
	}
	body, err := json.Marshal(resp)
	if err != nil {
		return envelope{Error: Errorf(CodeInternal, "encode response: %v", err)}
	}
	return envelope{Body: body}
}

// errorEnvelope answers err: an *Error as it is, anything else as internal.
func errorEnvelope(err error) envelope {
	var e *Error
	if errors.As(err, &e) {
		return envelope{Error: e}
	}
	return envelope{Error: Errorf(CodeInternal, "%v", err)}
}

// DecodeStrict decodes one JSON value with the strict decoder (package
// strictjson: no unknown or case-folded keys, no key twice, no trailing data).
func DecodeStrict(b []byte, v any) error {
	if err := strictjson.Decode(b, v); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return nil
}

// Call opens a stream to peer `to` for protocol pid, sends req and decodes the
// answer. A remote refusal comes back as *Error.
func Call[Req, Resp any](ctx context.Context, h host.Host, to peer.ID, pid protocol.ID, req *Req, lim Limits) (*Resp, error) {
	lim = lim.withDefaults()
	ctx, cancel := context.WithTimeout(ctx, lim.Timeout)
	defer cancel()
	b, err := json.Marshal(req)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	if len(b) > lim.MaxRequest {
		return nil, fmt.Errorf("%w: request of %d bytes, limit %d", ErrTooLarge, len(b), lim.MaxRequest)
	}
	s, err := h.NewStream(network.WithAllowLimitedConn(ctx, string(pid)), to, pid)
	if err != nil {
		return nil, fmt.Errorf("%w: %s to %s: %w", ErrNoStream, pid, to.ShortString(), err)
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = s.Reset() })
	defer stop()
	if err := WriteMsg(s, b); err != nil {
		_ = s.Reset()
		return nil, fmt.Errorf("send request: %w", err)
	}
	if err := s.CloseWrite(); err != nil {
		_ = s.Reset()
		return nil, fmt.Errorf("send request: %w", err)
	}
	raw, err := ReadMsg(bufio.NewReader(s), lim.MaxResponse+1024)
	if err != nil {
		_ = s.Reset()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%s to %s: %w", pid, to.ShortString(), ctx.Err())
		}
		return nil, fmt.Errorf("read response: %w", err)
	}
	var env envelope
	if err := json.Unmarshal(raw, &env); err != nil {
		return nil, fmt.Errorf("%w: response: %v", ErrMalformed, err)
	}
	if env.Error != nil {
		return nil, env.Error
	}
	var resp Resp
	if err := json.Unmarshal(env.Body, &resp); err != nil {
		return nil, fmt.Errorf("%w: response body: %v", ErrMalformed, err)
	}
	return &resp, nil
}

// LimitsOf is a protocol descriptor's size limits and deadline.
func LimitsOf(d wire.Descriptor) Limits {
	return Limits{MaxRequest: d.MaxRequest, MaxResponse: d.MaxResponse, Timeout: d.Timeout}
}

// Serve registers fn for protocol d on p with d's limits and deadline. When
// d checks its caller first, allow runs before the request is read (and must
// then be given).
func Serve[Req, Resp any](p *Peer, d wire.Protocol[Req, Resp], allow func(peer.ID) error, fn HandlerFunc[Req, Resp]) {
	lim := LimitsOf(d.Descriptor)
	if d.CheckFirst {
		lim.Allow = allow
	}
	Handle(p.Context(), p.Host, p.Protocol(d.Name), lim, fn)
}

// Request calls protocol d of peer `to` with d's limits and deadline (or
// ctx's, if sooner).
func Request[Req, Resp any](ctx context.Context, p *Peer, to peer.ID, d wire.Protocol[Req, Resp], req *Req) (*Resp, error) {
	return Call[Req, Resp](ctx, p.Host, to, p.Protocol(d.Name), req, LimitsOf(d.Descriptor))
}
