package p2p

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/internal/leaktest"
	"github.com/fedgrid/fedgrid/internal/wait"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

func TestMain(m *testing.M) {
	leaktest.VerifyMain(m)
}

func newTestPeer(t *testing.T, bootstrap ...string) *Peer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p, err := New(ctx, Config{DataDir: t.TempDir(), Network: "test", Listen: []string{"/ip4/127.0.0.1/tcp/0"}, Bootstrap: bootstrap})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	})
	return p
}

type echoReq struct {
	Text string `json:"text"`
}
type echoResp struct {
	Text string `json:"text"`
}

func TestIdentityPersists(t *testing.T) {
	dir := t.TempDir()
	a, err := LoadOrCreateIdentity(dir + "/k")
	if err != nil {
		t.Fatal(err)
	}
	b, err := LoadOrCreateIdentity(dir + "/k")
	if err != nil {
		t.Fatal(err)
	}
	if !a.Equals(b) {
		t.Fatal("identity changed between loads")
	}
	if err := WriteIdentity(dir+"/k", a); err == nil {
		t.Fatal("overwrote an existing key file")
	}
}

func TestCallHandle(t *testing.T) {
	srv := newTestPeer(t)
	cli := newTestPeer(t, srv.Addrs()...)
	pid := srv.Protocol("echo")
	lim := Limits{MaxRequest: 1024, MaxResponse: 1024, Timeout: 5 * time.Second}
	Handle(srv.Context(), srv.Host, pid, lim, func(ctx context.Context, from peer.ID, r *echoReq) (*echoResp, error) {
		if from != cli.ID() {
			return nil, Errorf(CodeForbidden, "unexpected peer %s", from)
		}
		if r.Text == "fail" {
			return nil, Errorf(CodeConflict, "asked to fail")
		}
		return &echoResp{Text: strings.ToUpper(r.Text)}, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	call := func(text string) (*echoResp, error) {
		return Call[echoReq, echoResp](ctx, cli.Host, srv.ID(), pid, &echoReq{Text: text}, lim)
	}
	got, err := call("hi")
	if err != nil || got.Text != "HI" {
		t.Fatalf("echo: %v %v", got, err)
	}

	// A handler's refusal arrives with its code.
	if _, err := call("fail"); !IsCode(err, CodeConflict) {
		t.Fatalf("want conflict, got %v", err)
	}

	// Over the limit: refused locally before sending...
	if _, err := call(strings.Repeat("x", 2000)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("want ErrTooLarge, got %v", err)
	}
	// ...and by the server when a client lies about the limit.
	big := Limits{MaxRequest: 1 << 20, MaxResponse: 1024, Timeout: 5 * time.Second}
	if _, err := Call[echoReq, echoResp](ctx, cli.Host, srv.ID(), pid, &echoReq{Text: strings.Repeat("x", 5000)}, big); !IsCode(err, CodeTooLarge) {
		t.Fatalf("want too_large from server, got %v", err)
	}

	// Malformed JSON, unknown or case-folded fields, a key twice and
	// trailing data (even a lone '}') are refused with a reason.
	for _, raw := range []string{"{not json", `{"text":"a","extra":1}`, `{"text":"a"} {"text":"b"}`,
		`{"text":"a"}}`, `{"text":"a","text":"b"}`, `{"TEXT":"a"}`} {
		resp := rawExchange(t, ctx, cli, srv.ID(), pid, []byte(raw))
		if !strings.Contains(resp, "bad_request") {
			t.Fatalf("raw %q: want bad_request, got %s", raw, resp)
		}
	}

	// A length prefix that promises more than the limit.
	s, err := cli.Host.NewStream(ctx, srv.ID(), pid)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = s.Write([]byte{0xff, 0xff, 0xff, 0xff, 0x0f})
	_ = s.CloseWrite()
	b, err := ReadMsg(bufio.NewReader(s), 4096)
	_ = s.Close()
	if err != nil || !strings.Contains(string(b), "too_large") {
		t.Fatalf("huge prefix: %s %v", b, err)
	}

	// An unknown protocol is refused by negotiation.
	if _, err := Call[echoReq, echoResp](ctx, cli.Host, srv.ID(), srv.Protocol("nope"), &echoReq{Text: "x"}, lim); err == nil {
		t.Fatal("unknown protocol accepted")
	}

	// After all of that the server still serves.
	got, err = call("still")
	if err != nil || got.Text != "STILL" {
		t.Fatalf("server stopped serving: %v %v", got, err)
	}
}

func rawExchange(t *testing.T, ctx context.Context, cli *Peer, to peer.ID, pid any, raw []byte) string {
	t.Helper()
	s, err := cli.Host.NewStream(ctx, to, cli.Protocol("echo"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := WriteMsg(s, raw); err != nil {
		t.Fatal(err)
	}
	_ = s.CloseWrite()
	b, err := ReadMsg(bufio.NewReader(s), 4096)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestHandlerDeadline(t *testing.T) {
	srv := newTestPeer(t)
	cli := newTestPeer(t, srv.Addrs()...)
	pid := srv.Protocol("slow")
	Handle(srv.Context(), srv.Host, pid, Limits{Timeout: 200 * time.Millisecond}, func(ctx context.Context, _ peer.ID, _ *echoReq) (*echoResp, error) {
		<-ctx.Done()
		return nil, Errorf(CodeUnavailable, "gave up: %v", ctx.Err())
	})
	// A client that opens a stream and never sends is cut off by the deadline.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, err := cli.Host.NewStream(ctx, srv.ID(), pid)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = ReadMsg(bufio.NewReader(s), 4096)
	_ = s.Close()
	if time.Since(start) > 3*time.Second {
		t.Fatalf("silent client held the handler for %v", time.Since(start))
	}
	_ = err
	// A client whose own deadline passes gets a timeout error.
	_, err = Call[echoReq, echoResp](ctx, cli.Host, srv.ID(), pid, &echoReq{}, Limits{Timeout: 100 * time.Millisecond})
	if err == nil {
		t.Fatal("want a timeout")
	}
}

func TestDHTProvideFind(t *testing.T) {
	boot := newTestPeer(t)
	a := newTestPeer(t, boot.Addrs()...)
	b := newTestPeer(t, boot.Addrs()...)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, p := range []*Peer{a, b} {
		if err := p.WaitRouting(ctx, 1); err != nil {
			t.Fatal(err)
		}
	}
	key := a.TagKey("medical")
	if err := a.DHT.Provide(ctx, key, true); err != nil {
		t.Fatal(err)
	}
	found := false
	for ai := range b.DHT.FindProvidersAsync(ctx, key, 1) {
		if ai.ID == a.ID() {
			found = true
		}
	}
	if !found {
		t.Fatal("provider not found")
	}
	// Peers of another network do not see the record.
	if TagKey("other", "medical") == key {
		t.Fatal("tag keys are not namespaced by network")
	}
	// FindPeer resolves a peer b has never talked to directly.
	if b.Host.Network().Connectedness(a.ID()) == network.Connected {
		_ = b.Host.Network().ClosePeer(a.ID())
	}
	ai, err := b.FindPeer(ctx, a.ID())
	if err != nil || len(ai.Addrs) == 0 {
		t.Fatalf("find peer: %v %v", ai, err)
	}
}

func TestKeepRedials(t *testing.T) {
	srv := newTestPeer(t)
	cli := newTestPeer(t, srv.Addrs()...)
	waitConn := func() {
		wait.For(t, 10*time.Second, "the connection", wait.Is(func() bool {
			return cli.Host.Network().Connectedness(srv.ID()) == network.Connected
		}))
	}
	waitConn()
	_ = cli.Host.Network().ClosePeer(srv.ID())
	waitConn()
}

func TestParseAddrInfos(t *testing.T) {
	if _, err := ParseAddrInfos([]string{"/ip4/127.0.0.1/tcp/1"}); err == nil {
		t.Fatal("accepted an address without /p2p/")
	}
	if _, err := ParseAddrInfos([]string{"nonsense"}); err == nil {
		t.Fatal("accepted nonsense")
	}
	if err := ValidateNetworkName("a/b"); err == nil {
		t.Fatal("accepted a slash in a network name")
	}
}

// Peers with a private network key talk only to peers with the same key.
func TestPrivateNetworkKey(t *testing.T) {
	key := func(b byte) []byte {
		k := make([]byte, 32)
		for i := range k {
			k[i] = b
		}
		return k
	}
	mk := func(psk []byte) *Peer {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		p, err := New(ctx, Config{DataDir: t.TempDir(), Network: "test", Listen: []string{"/ip4/127.0.0.1/tcp/0"}, PSK: psk})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Close() })
		return p
	}
	a, b, stranger := mk(key(1)), mk(key(1)), mk(key(2))
	ai := func(p *Peer) peer.AddrInfo { return peer.AddrInfo{ID: p.ID(), Addrs: p.Host.Addrs()} }
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Connect(ctx, ai(a)); err != nil {
		t.Fatalf("same key: %v", err)
	}
	sctx, scancel := context.WithTimeout(ctx, 2*time.Second)
	defer scancel()
	_ = stranger.Connect(sctx, ai(a))
	if stranger.Host.Network().Connectedness(a.ID()) == network.Connected {
		t.Fatal("a peer with another key connected")
	}
	if _, err := New(ctx, Config{DataDir: t.TempDir(), PSK: []byte("short")}); err == nil {
		t.Fatal("a 5-byte key was accepted")
	}
}

// FuzzReadMsg: whatever a remote peer sends, the frame reader and the
// strict decoder return a message within the limit or an error that says
// what was wrong; they never panic or allocate past the limit.
func FuzzReadMsg(f *testing.F) {
	var ok bytes.Buffer
	_ = WriteMsg(&ok, []byte(`{"text":"hi"}`))
	f.Add(ok.Bytes())
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Add([]byte{0x05, '{', '}'})
	f.Add(append([]byte{0x0d}, `{"text":1}   `...))
	const limit = 64
	f.Fuzz(func(t *testing.T, b []byte) {
		msg, err := ReadMsg(bufio.NewReader(bytes.NewReader(b)), limit)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTooLarge) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		if len(msg) > limit {
			t.Fatalf("%d bytes read past the %d-byte limit", len(msg), limit)
		}
		var req echoReq
		if err := DecodeStrict(msg, &req); err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("unclassified decode error: %v", err)
		}
	})
}

// TestAllowBeforeRead: a peer refused by Limits.Allow gets the refusal and
// the handler never runs; the request body is not read at all (a stream
// that announces a large request and sends none is answered at once, with
// the refusal rather than a complaint about the missing body).
func TestAllowBeforeRead(t *testing.T) {
	srv := newTestPeer(t)
	friend := newTestPeer(t, srv.Addrs()...)
	stranger := newTestPeer(t, srv.Addrs()...)
	pid := srv.Protocol("echo")
	var calls atomic.Int32
	lim := Limits{MaxRequest: 1 << 20, Timeout: 5 * time.Second, Allow: func(from peer.ID) error {
		if from != friend.ID() {
			return Errorf(CodeUnauthorized, "peer %s is not enrolled", from)
		}
		return nil
	}}
	Handle(srv.Context(), srv.Host, pid, lim, func(ctx context.Context, from peer.ID, r *echoReq) (*echoResp, error) {
		calls.Add(1)
		return &echoResp{Text: r.Text}, nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if r, err := Call[echoReq, echoResp](ctx, friend.Host, srv.ID(), pid, &echoReq{Text: "hi"}, lim); err != nil || r.Text != "hi" {
		t.Fatalf("allowed peer: %+v %v", r, err)
	}
	if _, err := Call[echoReq, echoResp](ctx, stranger.Host, srv.ID(), pid, &echoReq{Text: "hi"}, lim); !IsCode(err, CodeUnauthorized) {
		t.Fatalf("refused peer: %v", err)
	}
	// A large request (past the stream's flow-control window) still hears
	// the refusal, not a timeout.
	big := &echoReq{Text: strings.Repeat("x", 900<<10)}
	t0 := time.Now()
	if _, err := Call[echoReq, echoResp](ctx, stranger.Host, srv.ID(), pid, big, lim); !IsCode(err, CodeUnauthorized) {
		t.Fatalf("refused peer with a large request: %v after %v", err, time.Since(t0))
	}
	s, err := stranger.Host.NewStream(ctx, srv.ID(), pid)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var hdr [binary.MaxVarintLen64]byte
	if _, err := s.Write(hdr[:binary.PutUvarint(hdr[:], 1<<20)]); err != nil { // a 1 MiB request announced, none sent
		t.Fatal(err)
	}
	_ = s.CloseWrite()
	b, err := ReadMsg(bufio.NewReader(s), 4096)
	if err != nil || !strings.Contains(string(b), CodeUnauthorized) {
		t.Fatalf("answer to an announced request: %s %v", b, err)
	}
	if n := calls.Load(); n != 1 {
		t.Fatalf("handler ran %d times, want 1 (the allowed peer)", n)
	}
}
