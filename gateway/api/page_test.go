package api

import (
	"net/url"
	"slices"
	"testing"

	"github.com/fedgrid/fedgrid/gateway/store"
)

// TestJobsPagination: ?limit= cuts the list, next_cursor walks it page by
// page to the end, in the list's order, each job once; bad values are 400.
func TestJobsPagination(t *testing.T) {
	e := newEnv(t, nil)
	owner := e.setup()
	d := &store.Dataset{Name: "d", Visibility: store.VisibilityPublic}
	if err := e.st.PutDataset(d, []byte("a\n1\n")); err != nil {
		t.Fatal(err)
	}
	o, _ := e.st.UserByEmail("owner@example.org")
	for range 5 {
		if err := e.st.CreateJob(&store.Job{DatasetID: d.ID, UserID: o.ID}); err != nil {
			t.Fatal(err)
		}
	}
	var all JobList
	e.want(e.do("GET", "/api/v1/jobs", owner, nil), 200).decode(t, &all)
	if len(all.Jobs) != 5 || all.NextCursor != "" {
		t.Fatalf("without limit: %d jobs, cursor %q", len(all.Jobs), all.NextCursor)
	}
	var walked []string
	cursor, pages := "", 0
	for {
		q := url.Values{"limit": {"2"}}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		var p JobList
		e.want(e.do("GET", "/api/v1/jobs?"+q.Encode(), owner, nil), 200).decode(t, &p)
		pages++
		if len(p.Jobs) > 2 || len(p.Jobs) == 0 {
			t.Fatalf("page %d has %d jobs", pages, len(p.Jobs))
		}
		for _, j := range p.Jobs {
			walked = append(walked, j.ID)
		}
		if p.NextCursor == "" {
			break
		}
		cursor = p.NextCursor
	}
	var want []string
	for _, j := range all.Jobs {
		want = append(want, j.ID)
	}
	if pages != 3 || !slices.Equal(walked, want) {
		t.Fatalf("%d pages walked %v, want 3 pages of %v", pages, walked, want)
	}
	for _, bad := range []string{"limit=0", "limit=1001", "limit=x", "cursor=%21%21", "cursor=bm9zdWNo"} {
		if r := e.do("GET", "/api/v1/jobs?"+bad, owner, nil); r.status != 400 || r.errCode(t) != "invalid_field" {
			t.Errorf("?%s: %d %s", bad, r.status, r.body)
		}
	}
}
