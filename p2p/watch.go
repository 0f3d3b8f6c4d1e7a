package p2p

import (
	"fmt"
	"sync"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Rejoins tells which of a set of peers (re)connected since it was last
// asked. It reads the host's connectedness events in a goroutine of its
// own that never waits on its reader: libp2p's swarm hands every new
// connection to one event emitter, and a subscriber that stops reading for
// a while (a loop busy in a DHT provide for seconds) blocks that emitter
// and with it every connection the host opens or accepts - identify and
// new streams time out. At 100 gateways on one machine that cut search
// recall to 8-67%.
type Rejoins struct {
	sub   event.Subscription
	watch map[peer.ID]bool
	wake  chan struct{}
	done  chan struct{}

	mu  sync.Mutex
	got map[peer.ID]bool
}

// WatchRejoins starts watching ids. Close stops it.
func (p *Peer) WatchRejoins(ids []peer.ID) (*Rejoins, error) {
	sub, err := p.Host.EventBus().Subscribe(new(event.EvtPeerConnectednessChanged))
	if err != nil {
		return nil, fmt.Errorf("subscribe to connection events: %w", err)
	}
	r := &Rejoins{sub: sub, watch: map[peer.ID]bool{}, wake: make(chan struct{}, 1), done: make(chan struct{}), got: map[peer.ID]bool{}}
	for _, id := range ids {
		r.watch[id] = true
	}
	go r.run()
	return r, nil
}

func (r *Rejoins) run() {
	defer close(r.done)
	for ev := range r.sub.Out() { // ends when Close closes the subscription
		e, ok := ev.(event.EvtPeerConnectednessChanged)
		if !ok || e.Connectedness != network.Connected || !r.watch[e.Peer] {
			continue
		}
		r.mu.Lock()
		r.got[e.Peer] = true
		r.mu.Unlock()
		select {
		case r.wake <- struct{}{}:
		default: // a wake-up is already pending
		}
	}
}

// C receives a value when a watched peer connected since the last Take.
func (r *Rejoins) C() <-chan struct{} { return r.wake }

// Take returns the watched peers that connected since the last Take.
func (r *Rejoins) Take() []peer.ID {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]peer.ID, 0, len(r.got))
	for id := range r.got {
		out = append(out, id)
	}
	clear(r.got)
	return out
}

// Close stops watching and waits for the watcher goroutine to end.
func (r *Rejoins) Close() error {
	err := r.sub.Close()
	<-r.done
	return err
}
