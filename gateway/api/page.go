package api

import (
	"encoding/base64"
	"net/url"
	"strconv"
)

// maxPageLimit bounds ?limit= on the paginated lists.
const maxPageLimit = 1000

// pageOf cuts one page out of a list in its stable order: the items after
// the one the cursor names (?cursor=, from the previous page's
// next_cursor), at most ?limit= of them (absent: all). The returned cursor
// names the page's last item when more follow, else it is "".
func pageOf[T any](items []T, id func(T) string, q url.Values) ([]T, string, error) {
	limit := 0
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > maxPageLimit {
			return nil, "", badField("limit", "must be a whole number from 1 to %d", maxPageLimit)
		}
		limit = n
	}
	start := 0
	if c := q.Get("cursor"); c != "" {
		raw, err := base64.RawURLEncoding.DecodeString(c)
		if err != nil || len(raw) == 0 {
			return nil, "", badField("cursor", "is not a cursor this API made (take next_cursor from the previous page)")
		}
		start = -1
		for i, it := range items {
			if id(it) == string(raw) {
				start = i + 1
				break
			}
		}
		if start < 0 {
			return nil, "", badField("cursor", "names an item that is no longer in the list; start again from the first page")
		}
	}
	items = items[start:]
	if limit == 0 || len(items) <= limit {
		return items, "", nil
	}
	page := items[:limit]
	return page, base64.RawURLEncoding.EncodeToString([]byte(id(page[limit-1]))), nil
}
