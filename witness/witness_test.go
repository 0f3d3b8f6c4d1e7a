package witness

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/p2p"
	"github.com/fedgrid/fedgrid/wire"
)

func TestWitness(t *testing.T) {
	sk, err := p2p.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	cp := func(seq uint64, hash string) wire.Checkpoint {
		c := wire.Checkpoint{Seq: seq, Hash: strings.Repeat(hash, 64), Time: time.Unix(int64(seq), 0)}
		if err := Sign(sk, &c); err != nil {
			t.Fatal(err)
		}
		if err := Verify(&c); err != nil {
			t.Fatal(err)
		}
		return c
	}
	bad := cp(1, "a")
	bad.Seq = 2
	if err := Verify(&bad); err == nil {
		t.Fatal("a checkpoint changed after signing verifies")
	}
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= KeepPerGW+2; i++ {
		if err := s.Put(cp(i*10, "a")); err != nil {
			t.Fatal(err)
		}
	}
	gw := cp(1, "a").Gateway
	if err := s.Put(cp(KeepPerGW*10+20, "a")); err != nil { // the same again
		t.Fatal(err)
	}
	for _, c := range []wire.Checkpoint{cp(15, "a"), cp(KeepPerGW*10+20, "b")} {
		if err := s.Put(c); !errors.Is(err, ErrBackwards) {
			t.Fatalf("put seq %d: %v, want ErrBackwards", c.Seq, err)
		}
	}
	// Durable: a new Open reads what was kept, the latest KeepPerGW.
	s2, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	got := s2.Get(gw)
	if len(got) != KeepPerGW || got[0].Seq != 30 || got[len(got)-1].Seq != KeepPerGW*10+20 || got[0].Hash != strings.Repeat("a", 64) {
		t.Fatalf("kept %+v", got)
	}
	if err := Verify(&got[3]); err != nil {
		t.Fatalf("a kept checkpoint no longer verifies: %v", err)
	}
}
