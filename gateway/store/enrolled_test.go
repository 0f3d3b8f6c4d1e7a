package store

import (
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/wire"
)

// TestEnrolledMirror checks the in-memory set of enrolled nodes that
// AuthorizeCaller reads against the stored nodes: enrolment adds, a refused
// token adds nothing, removal takes the node out at once, and a reopened
// store starts from what is stored.
func TestEnrolledMirror(t *testing.T) {
	dir := t.TempDir()
	s := openTest(t, dir)
	node := func(peer string) error {
		_, err := s.AuthorizeCaller(peer, wire.CallerNode)
		return err
	}
	if err := node("a"); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("unknown node: %v", err)
	}
	var wg sync.WaitGroup
	peers := []string{"a", "b", "c", "d"}
	for _, p := range peers {
		tok, _, err := s.CreateJoinToken(time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() { // enrolments that share commits
			defer wg.Done()
			if _, err := s.RedeemJoinToken(tok, p, 1, "v"); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	for _, p := range peers {
		if err := node(p); err != nil {
			t.Fatalf("enrolled %s: %v", p, err)
		}
	}
	if _, err := s.RedeemJoinToken("made-up", "e", 1, "v"); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("bad token: %v", err)
	}
	if err := node("e"); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("refused enrolment let the peer in: %v", err)
	}
	if err := s.RemoveNode("b"); err != nil {
		t.Fatal(err)
	}
	if err := node("b"); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("removed node: %v", err)
	}
	// A removed node cannot come back, and the set says so.
	tok, _, _ := s.CreateJoinToken(time.Hour)
	if _, err := s.RedeemJoinToken(tok, "b", 1, "v"); !errors.Is(err, ErrTokenInvalid) {
		t.Fatalf("removed node re-enrolled: %v", err)
	}
	if err := node("b"); !errors.Is(err, ErrUnknownPeer) {
		t.Fatalf("removed node after a refused re-enrolment: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir)
	for _, p := range []string{"a", "c", "d"} {
		if !s.Enrolled(p) {
			t.Fatalf("%s not enrolled after reopening", p)
		}
	}
	if s.Enrolled("b") || s.Enrolled("e") {
		t.Fatal("removed or refused node enrolled after reopening")
	}
}
