package api

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fedgrid/fedgrid/internal/wait"

	"github.com/fedgrid/fedgrid/gateway/store"
)

func testCSV(rows int) []byte {
	var b bytes.Buffer
	b.WriteString("age,glucose,label\n")
	for i := range rows {
		fmt.Fprintf(&b, "%d,%d.%d,%d\n", 20+i%60, 70+i%90, i%10, i%2)
	}
	return b.Bytes()
}

func hexSum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// sendAll sends data from offset on in chunks of n bytes.
func (e *env) sendAll(tok, id string, offset int64, data []byte, n int) {
	e.t.Helper()
	for offset < int64(len(data)) {
		end := min(offset+int64(n), int64(len(data)))
		var v UploadView
		e.want(e.chunk(tok, id, offset, data[offset:end]), 200).decode(e.t, &v)
		if v.Offset != end {
			e.t.Fatalf("offset after chunk: %d, want %d", v.Offset, end)
		}
		offset = end
	}
}

func TestResumableUpload(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.UploadChunkBytes = 4096 })
	owner := e.setup()
	_, other := e.newUser(owner, "admin2@example.org", store.RoleAdministrator, newPeerID(t), 0)
	_, sci := e.newUser(owner, "sci@example.org", store.RoleDataScientist, newPeerID(t), 0)
	data := testCSV(1000) // about 14 KB: four chunks

	// Uninterrupted.
	var whole UploadView
	e.want(e.do("POST", "/api/v1/uploads", owner, CreateUploadRequest{Size: int64(len(data)), Name: "whole", Tags: []string{"Medical"}}), 201).decode(t, &whole)
	if whole.Offset != 0 || whole.State != "receiving" || whole.ChunkMaxBytes != 4096 || whole.Visibility != store.VisibilityPrivate || whole.Tags[0] != "medical" {
		t.Fatalf("new upload %+v", whole)
	}
	e.sendAll(owner, whole.ID, 0, data, 4096)
	var wd store.Dataset
	e.want(e.do("POST", "/api/v1/uploads/"+whole.ID+"/finish", owner, nil), 201).decode(t, &wd)
	if wd.Name != "whole" || wd.Rows != 1000 || wd.Version != 1 || wd.SHA256 == "" {
		t.Fatalf("dataset of the upload: %+v", wd)
	}

	// Cut in the middle of its second chunk, then resumed.
	var cut UploadView
	e.want(e.do("POST", "/api/v1/uploads", owner, CreateUploadRequest{Size: int64(len(data)), Name: "cut", SHA256: hexSum(data)}), 201).decode(t, &cut)
	e.sendAll(owner, cut.ID, 0, data[:4096], 4096)
	// The cut: a chunk of 4096 declared bytes whose connection closes after
	// 1500 of them, written by hand so that exactly those bytes reach the
	// gateway (an http.Client may or may not flush a failed body).
	conn, err := net.Dial("tcp", e.srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	head := "PATCH /api/v1/uploads/" + cut.ID + "?offset=4096 HTTP/1.1\r\nHost: gateway\r\n" +
		"Content-Type: application/offset+octet-stream\r\nAuthorization: Bearer " + owner + "\r\nContent-Length: 4096\r\n\r\n"
	if _, err := conn.Write(append([]byte(head), data[4096:4096+1500]...)); err != nil {
		t.Fatal(err)
	}
	if err := conn.Close(); err != nil {
		t.Fatal(err)
	}
	// What arrived of the cut chunk is kept once the gateway has read to
	// the cut; until then the chunk holds the session (409 upload_busy).
	var got UploadView
	var r resp
	wait.For(t, 30*time.Second, "the gateway to keep the cut chunk's 1500 bytes", func() error {
		r = e.want(e.do("GET", "/api/v1/uploads/"+cut.ID, owner, nil), 200)
		r.decode(t, &got)
		if got.Offset != 4096+1500 {
			return fmt.Errorf("offset %d", got.Offset)
		}
		return nil
	})
	if r.header.Get("Upload-Offset") != strconv.FormatInt(got.Offset, 10) {
		t.Fatalf("offset after the cut: %d, header %q", got.Offset, r.header.Get("Upload-Offset"))
	}
	// Finishing is refused: bytes are missing.
	var fin resp
	wait.For(t, 30*time.Second, "the cut chunk to end on the gateway", func() error {
		fin = e.do("POST", "/api/v1/uploads/"+cut.ID+"/finish", owner, nil)
		if fin.status == 409 && fin.errCode(t) == "upload_busy" {
			return errors.New("still busy")
		}
		return nil
	})
	if fin.status != 409 || fin.errCode(t) != "upload_incomplete" {
		t.Fatalf("finish of a cut upload: %d %s", fin.status, fin.body)
	}
	// Resending the cut chunk from its start is refused with the offset.
	r = e.chunk(owner, cut.ID, 0, data[:4096])
	at := strconv.FormatInt(got.Offset, 10)
	if r.status != 409 || r.errCode(t) != "offset_mismatch" || !strings.Contains(string(r.body), "offset "+at) || r.header.Get("Upload-Offset") != at {
		t.Fatalf("stale offset: %d %v %s", r.status, r.header, r.body)
	}
	e.sendAll(owner, cut.ID, got.Offset, data, 4096)
	var cd store.Dataset
	e.want(e.do("POST", "/api/v1/uploads/"+cut.ID+"/finish", owner, FinishUploadRequest{SHA256: hexSum(data)}), 201).decode(t, &cd)
	if cd.SHA256 != wd.SHA256 || cd.ID == wd.ID || cd.Rows != wd.Rows {
		t.Fatalf("resumed upload: dataset %s sha %s rows %d; uninterrupted %s sha %s rows %d", cd.ID, cd.SHA256, cd.Rows, wd.ID, wd.SHA256, wd.Rows)
	}
	// The finish's answer was lost: asking again gives the same dataset.
	var again store.Dataset
	e.want(e.do("POST", "/api/v1/uploads/"+cut.ID+"/finish", owner, nil), 201).decode(t, &again)
	if again.ID != cd.ID || again.Version != cd.Version {
		t.Fatalf("finish again: %s v%d, want %s v%d", again.ID, again.Version, cd.ID, cd.Version)
	}
	e.want(e.do("GET", "/api/v1/uploads/"+cut.ID, owner, nil), 200).decode(t, &got)
	if got.State != "finished" || got.Result == nil || got.Result.DatasetID != cd.ID || got.Result.SHA256 != hexSum(data) {
		t.Fatalf("finished upload: %+v", got)
	}

	// A new version of the dataset through the same path.
	v2 := testCSV(1200)
	var nv UploadView
	e.want(e.do("POST", "/api/v1/uploads", owner, CreateUploadRequest{Size: int64(len(v2)), DatasetID: wd.ID}), 201).decode(t, &nv)
	e.sendAll(owner, nv.ID, 0, v2, 4096)
	var d2 store.Dataset
	e.want(e.do("POST", "/api/v1/uploads/"+nv.ID+"/finish", owner, nil), 201).decode(t, &d2)
	if d2.ID != wd.ID || d2.Version != 2 || d2.Rows != 1200 || d2.Name != "whole" || d2.SHA256 == wd.SHA256 {
		t.Fatalf("new version: %+v", d2)
	}
	if !slices.Contains(e.hooks.list(), "added "+wd.ID) {
		t.Errorf("DatasetAdded hook not called: %v", e.hooks.list())
	}

	// Sessions are their owner's: another uploader and a data scientist
	// see none of them.
	var mine UploadView
	e.want(e.do("POST", "/api/v1/uploads", owner, CreateUploadRequest{Size: int64(len(data)), Name: "mine"}), 201).decode(t, &mine)
	for _, call := range []resp{
		e.do("GET", "/api/v1/uploads/"+mine.ID, other, nil),
		e.chunk(other, mine.ID, 0, data[:10]),
		e.do("POST", "/api/v1/uploads/"+mine.ID+"/finish", other, nil),
		e.do("DELETE", "/api/v1/uploads/"+mine.ID, other, nil),
	} {
		if call.status != 404 || call.errCode(t) != "not_found" {
			t.Fatalf("another user's upload: %d %s", call.status, call.body)
		}
	}
	if r := e.do("GET", "/api/v1/uploads/"+mine.ID, sci, nil); r.status != 403 {
		t.Fatalf("data scientist: %d %s", r.status, r.body)
	}
	// A chunk over the chunk limit keeps its first 4096 bytes, refuses the rest.
	if r := e.chunk(owner, mine.ID, 0, data[:5000]); r.status != 413 || r.errCode(t) != "too_large" || r.header.Get("Upload-Offset") != "4096" {
		t.Fatalf("oversized chunk: %d %v %s", r.status, r.header, r.body)
	}
	if r := e.do("POST", "/api/v1/uploads/"+mine.ID+"/finish", owner, FinishUploadRequest{SHA256: strings.Repeat("0", 64)}); r.status != 409 || r.errCode(t) != "upload_incomplete" {
		t.Fatalf("finish with bytes missing: %d %s", r.status, r.body)
	}
	e.sendAll(owner, mine.ID, 4096, data, 4096)
	if r := e.do("POST", "/api/v1/uploads/"+mine.ID+"/finish", owner, FinishUploadRequest{SHA256: strings.Repeat("0", 64)}); r.status != 409 || r.errCode(t) != "checksum_mismatch" || !strings.Contains(string(r.body), hexSum(data)) {
		t.Fatalf("finish with a wrong SHA-256: %d %s", r.status, r.body)
	}
	// Each uploader lists their own uploads only.
	var list UploadList
	e.want(e.do("GET", "/api/v1/uploads", owner, nil), 200).decode(t, &list)
	ids := map[string]string{}
	for _, u := range list.Uploads {
		ids[u.ID] = u.State
	}
	if ids[mine.ID] != "complete" || ids[cut.ID] != "finished" || len(list.Uploads) != 4 {
		t.Fatalf("owner's uploads: %v", ids)
	}
	e.want(e.do("GET", "/api/v1/uploads", other, nil), 200).decode(t, &list)
	if len(list.Uploads) != 0 {
		t.Fatalf("another uploader sees %d uploads", len(list.Uploads))
	}
	e.want(e.do("DELETE", "/api/v1/uploads/"+mine.ID, owner, nil), 204)
	e.want(e.do("GET", "/api/v1/uploads/"+mine.ID, owner, nil), 404)

	// Parquet declared, CSV sent; CSV declared, Parquet sent.
	var pq UploadView
	e.want(e.do("POST", "/api/v1/uploads", owner, CreateUploadRequest{Size: int64(len(data)), Name: "pq", Format: "parquet"}), 201).decode(t, &pq)
	e.sendAll(owner, pq.ID, 0, data, 4096)
	if r := e.do("POST", "/api/v1/uploads/"+pq.ID+"/finish", owner, nil); r.status != 400 || r.errCode(t) != "bad_parquet" {
		t.Fatalf("CSV declared as Parquet: %d %s", r.status, r.body)
	}
	fake := []byte("PAR1 not really parquet PAR1")
	var pc UploadView
	e.want(e.do("POST", "/api/v1/uploads", owner, CreateUploadRequest{Size: int64(len(fake)), Name: "pc"}), 201).decode(t, &pc)
	e.sendAll(owner, pc.ID, 0, fake, 4096)
	if r := e.do("POST", "/api/v1/uploads/"+pc.ID+"/finish", owner, nil); r.status != 400 || r.errCode(t) != "bad_csv" || !strings.Contains(string(r.body), "format parquet") {
		t.Fatalf("Parquet declared as CSV: %d %s", r.status, r.body)
	}
	// A malformed CSV is refused at finish with the parser's reason.
	bad := []byte("a,b\n1,2,3\n")
	var bc UploadView
	e.want(e.do("POST", "/api/v1/uploads", owner, CreateUploadRequest{Size: int64(len(bad)), Name: "bad"}), 201).decode(t, &bc)
	e.sendAll(owner, bc.ID, 0, bad, 4096)
	if r := e.do("POST", "/api/v1/uploads/"+bc.ID+"/finish", owner, nil); r.status != 400 || r.errCode(t) != "bad_csv" {
		t.Fatalf("malformed CSV: %d %s", r.status, r.body)
	}

	// Refusals at creation.
	for _, c := range []struct {
		req    CreateUploadRequest
		status int
		code   string
	}{
		{CreateUploadRequest{Name: "x"}, 400, "invalid_field"},
		{CreateUploadRequest{Size: 1 << 31, Name: "x"}, 413, "too_large"},
		{CreateUploadRequest{Size: 10, Name: "x", Format: "xlsx"}, 400, "invalid_field"},
		{CreateUploadRequest{Size: 10}, 400, "invalid_field"},
		{CreateUploadRequest{Size: 10, Name: "x", Visibility: "secret"}, 400, "invalid_field"},
		{CreateUploadRequest{Size: 10, Name: "x", SHA256: "abc"}, 400, "invalid_field"},
		{CreateUploadRequest{Size: 10, DatasetID: wd.ID, Name: "renamed"}, 400, "invalid_field"},
		{CreateUploadRequest{Size: 10, DatasetID: "nosuch"}, 404, "not_found"},
	} {
		if r := e.do("POST", "/api/v1/uploads", owner, c.req); r.status != c.status || r.errCode(t) != c.code {
			t.Errorf("create %+v: %d %s, want %d %s", c.req, r.status, r.body, c.status, c.code)
		}
	}
	e.api.cfg.Uploads.Free = func() (int64, error) { return 100, nil }
	if r := e.do("POST", "/api/v1/uploads", owner, CreateUploadRequest{Size: 101, Name: "x"}); r.status != 507 || r.errCode(t) != "insufficient_storage" {
		t.Fatalf("upload the disk cannot hold: %d %s", r.status, r.body)
	}
}

// TestUploadAudit: creating, finishing and cancelling an upload session
// are in the audit log, with who did it and what the bytes became.
func TestUploadAudit(t *testing.T) {
	e := newEnv(t, nil)
	owner := e.setup()
	adminID, admin := e.newUser(owner, "admin@example.org", store.RoleAdministrator, "", 0)
	data := testCSV(50)
	var up, gone UploadView
	e.want(e.do("POST", "/api/v1/uploads", admin, CreateUploadRequest{Size: int64(len(data)), Name: "audited"}), 201).decode(t, &up)
	e.sendAll(admin, up.ID, 0, data, len(data))
	var d store.Dataset
	e.want(e.do("POST", "/api/v1/uploads/"+up.ID+"/finish", admin, nil), 201).decode(t, &d)
	e.want(e.do("POST", "/api/v1/uploads", admin, CreateUploadRequest{Size: 1000, Name: "dropped"}), 201).decode(t, &gone)
	e.sendAll(admin, gone.ID, 0, data[:10], 10)
	e.want(e.do("DELETE", "/api/v1/uploads/"+gone.ID, admin, nil), 204)

	var log AuditList
	e.want(e.do("GET", "/api/v1/audit?action=upload.&limit=1000", owner, nil), 200).decode(t, &log)
	var got []string
	for _, a := range log.Entries {
		if a.Actor != adminID {
			t.Errorf("%s by %q, want the administrator %s", a.Action, a.Actor, adminID)
		}
		got = append(got, a.Action+" "+a.Target)
		switch a.Action {
		case "upload.finish":
			if a.Detail["dataset_id"] != d.ID || a.Detail["sha256"] != hexSum(data) {
				t.Errorf("upload.finish detail %v; want dataset %s and the bytes' hash", a.Detail, d.ID)
			}
		case "upload.cancel":
			if a.Detail["received"] != float64(10) || a.Detail["name"] != "dropped" {
				t.Errorf("upload.cancel detail %v; want 10 bytes received of \"dropped\"", a.Detail)
			}
		}
	}
	want := []string{"upload.create upload/" + up.ID, "upload.finish upload/" + up.ID, "upload.create upload/" + gone.ID, "upload.cancel upload/" + gone.ID}
	if !slices.Equal(got, want) {
		t.Fatalf("audit entries %q, want %q", got, want)
	}
}
