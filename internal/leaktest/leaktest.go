// Package leaktest holds the goroutine-leak check shared by the tests of
// packages that run peers: goleak, plus the few goroutines that libraries
// start once per process and never stop (not ours to own).
package leaktest

import (
	"testing"

	"go.uber.org/goleak"
)

// Options returns goleak options ignoring process-wide library goroutines.
func Options() []goleak.Option {
	return []goleak.Option{
		goleak.IgnoreTopFunction("github.com/ipfs/go-log/v2/writer.(*MirrorWriter).logRoutine"),
		goleak.IgnoreTopFunction("go.opencensus.io/stats/view.(*worker).start"),
		goleak.IgnoreAnyFunction("github.com/dgraph-io/ristretto/v2/z.(*AllocatorPool).freeupAllocators"),
		goleak.IgnoreAnyFunction("github.com/golang/glog.(*fileSink).flushDaemon"),
		// libp2p's mocknet (tests only) starts a goroutine per stream that
		// is left waiting when the stream is opened on a connection being
		// closed at the same instant; nothing of fedgrid can stop it.
		goleak.IgnoreTopFunction("github.com/libp2p/go-libp2p/p2p/net/mock.(*stream).transport"),
	}
}

// VerifyMain runs the package's tests, then fails if any goroutine is left.
func VerifyMain(m *testing.M) {
	goleak.VerifyTestMain(m, Options()...)
}
