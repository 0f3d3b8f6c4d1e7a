package gateway

import (
	"log/slog"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/gateway/store"
	"github.com/fedgrid/fedgrid/gateway/upload"
)

// Expired upload sessions are removed by the sweep and the removal is in
// the audit log; a sweep that removes nothing writes nothing.
func TestSweepUploadsAudited(t *testing.T) {
	st, err := store.Open(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	ups, err := upload.Open(t.TempDir(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	g := &Gateway{cfg: Config{UploadTTL: time.Hour}, log: slog.New(slog.DiscardHandler), store: st, uploads: ups}
	for range 2 {
		if _, err := ups.Create(upload.Session{Owner: "u", Size: 10}); err != nil {
			t.Fatal(err)
		}
	}
	expired := func() []*store.AuditEntry {
		es, err := st.Audit(store.AuditFilter{Action: "upload.expire"})
		if err != nil {
			t.Fatal(err)
		}
		return es
	}
	g.sweepUploads(time.Now()) // nothing expired yet
	if es := expired(); len(es) != 0 {
		t.Fatalf("a sweep that removed nothing audited %+v", es)
	}
	g.sweepUploads(time.Now().Add(2 * time.Hour))
	if left, err := ups.List("u"); err != nil || len(left) != 0 {
		t.Fatalf("after the TTL: %d sessions left, %v", len(left), err)
	}
	es := expired()
	if len(es) != 1 || es[0].Detail["removed"] != float64(2) || es[0].Actor != "" {
		t.Fatalf("audit of the sweep: %+v; want one upload.expire removing 2", es)
	}
}
