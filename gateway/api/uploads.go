package api

import (
	"bytes"
	"context"
	"errors"
	"io"
	"mime"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fedgrid/fedgrid/dataset"
	"github.com/fedgrid/fedgrid/gateway/ingest"
	"github.com/fedgrid/fedgrid/gateway/store"
	resumable "github.com/fedgrid/fedgrid/gateway/upload"
)

// Resumable uploads (the ideas of the tus.io protocol in this API's style):
// POST /api/v1/uploads declares the size and what the bytes are; PATCH
// /api/v1/uploads/{id}?offset=N appends one chunk that must start where the
// received bytes end (409 offset_mismatch names the right offset); GET says
// the offset; POST .../finish checks size and SHA-256 and ingests the bytes
// (gateway/ingest, streaming from the session's file); DELETE cancels.

// Upload defaults (Config fields left zero).
const (
	defaultUploadChunk         = 64 << 20
	defaultUploadChunkTimeout  = 10 * time.Minute
	defaultUploadFinishTimeout = 2 * time.Hour
	defaultUploadTTL           = 24 * time.Hour
)

// Formats an upload may declare.
const (
	FormatCSV     = "csv"
	FormatParquet = "parquet"
)

// Compiled on first use, not at start: a bounded repetition compiles to
// hundreds of allocations that every fedgrid process (a node too) would
// pay in its initialisers (issue 18).
var hexSHA256 = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[0-9a-f]{64}$`) })

func (a *API) uploads() (*resumable.Store, error) {
	if a.cfg.Uploads == nil {
		return nil, errorf(http.StatusServiceUnavailable, "unavailable", "this gateway keeps no upload sessions")
	}
	return a.cfg.Uploads, nil
}

// uploadError maps the upload package's errors onto the API's.
func uploadError(err error, id string, offset int64) error {
	switch {
	case errors.Is(err, resumable.ErrNotFound):
		return errorf(http.StatusNotFound, "not_found", "no upload %s", id)
	case errors.Is(err, resumable.ErrOffset):
		return errorf(http.StatusConflict, "offset_mismatch", "the upload has received %d bytes: send the chunk that starts at offset %d", offset, offset)
	case errors.Is(err, resumable.ErrTooLarge):
		return errorf(http.StatusRequestEntityTooLarge, "too_large", "%s", strings.TrimPrefix(err.Error(), "upload: "))
	case errors.Is(err, resumable.ErrBusy):
		return errorf(http.StatusConflict, "upload_busy", "another request is sending a chunk to, finishing or cancelling this upload; retry when it ends")
	case errors.Is(err, resumable.ErrShort):
		return errorf(http.StatusConflict, "upload_incomplete", "%s: send the rest from offset %d", strings.TrimPrefix(err.Error(), "upload: "), offset)
	case errors.Is(err, resumable.ErrNoSpace):
		return errorf(http.StatusInsufficientStorage, "insufficient_storage", "%s", strings.TrimPrefix(err.Error(), "upload: "))
	case errors.Is(err, resumable.ErrTooMany):
		return errorf(http.StatusTooManyRequests, "too_many_uploads", "%s", strings.TrimPrefix(err.Error(), "upload: "))
	case errors.Is(err, resumable.ErrDone):
		return errorf(http.StatusConflict, "upload_finished", "the upload is finished; GET it to see the dataset version it became")
	}
	return err
}

// session returns the caller's session id; anyone else's is not found.
func (a *API) session(c *call) (*resumable.Store, *resumable.Session, error) {
	ups, err := a.uploads()
	if err != nil {
		return nil, nil, err
	}
	id := c.r.PathValue("id")
	sess, err := ups.Session(id)
	if err == nil && sess.Owner != c.actor() {
		err = resumable.ErrNotFound
	}
	if err != nil {
		return nil, nil, uploadError(err, id, 0)
	}
	return ups, sess, nil
}

func (a *API) uploadView(ups *resumable.Store, sess *resumable.Session) (UploadView, error) {
	off, err := ups.Offset(sess.ID)
	if err != nil {
		return UploadView{}, uploadError(err, sess.ID, 0)
	}
	touched, err := ups.Touched(sess.ID)
	if err != nil {
		return UploadView{}, uploadError(err, sess.ID, 0)
	}
	v := UploadView{ID: sess.ID, Size: sess.Size, Offset: off, Format: sess.Format, Name: sess.Name, Description: sess.Description,
		Tags: sess.Tags, Visibility: sess.Visibility, DatasetID: sess.DatasetID, SHA256: sess.SHA256,
		ChunkMaxBytes: a.cfg.UploadChunkBytes, CreatedAt: sess.CreatedAt, ExpiresAt: touched.Add(a.cfg.UploadTTL).UTC()}
	if v.Tags == nil {
		v.Tags = []string{}
	}
	switch {
	case sess.Result != nil:
		v.State = "finished"
		v.Result = &UploadResult{DatasetID: sess.Result.DatasetID, Version: sess.Result.Version, SHA256: sess.Result.SHA256}
	case off == sess.Size:
		v.State = "complete"
	default:
		v.State = "receiving"
	}
	return v, nil
}

func (a *API) createUpload(c *call) (any, error) {
	ups, err := a.uploads()
	if err != nil {
		return nil, err
	}
	var req CreateUploadRequest
	if err := c.decode(&req); err != nil {
		return nil, err
	}
	if req.Size < 1 {
		return nil, badField("size", "must be the file's size in bytes, at least 1")
	}
	if req.Size > ups.MaxSize() {
		return nil, errorf(http.StatusRequestEntityTooLarge, "too_large", "size: %d bytes is more than this gateway accepts (%d)", req.Size, ups.MaxSize())
	}
	switch req.Format {
	case "":
		req.Format = FormatCSV
	case FormatCSV, FormatParquet:
	default:
		return nil, badField("format", "must be csv or parquet")
	}
	req.SHA256 = strings.ToLower(strings.TrimSpace(req.SHA256))
	if req.SHA256 != "" && !hexSHA256().MatchString(req.SHA256) {
		return nil, badField("sha256", "must be 64 hex digits")
	}
	tmpl := resumable.Session{Owner: c.actor(), Size: req.Size, Format: req.Format, SHA256: req.SHA256}
	if req.DatasetID != "" {
		// A new version: the dataset's description stays as it is (PATCH it).
		for field, set := range map[string]bool{"name": req.Name != "", "description": req.Description != "", "tags": req.Tags != nil, "visibility": req.Visibility != ""} {
			if set {
				return nil, badField(field, "not allowed with dataset_id: a new version keeps the dataset's description (change it with PATCH /api/v1/datasets/{id})")
			}
		}
		if _, err := a.st.Dataset(req.DatasetID); err != nil {
			return nil, err
		}
		tmpl.DatasetID = req.DatasetID
	} else {
		d := &store.Dataset{Name: req.Name, Description: req.Description, Tags: req.Tags, Visibility: req.Visibility}
		if err := store.CheckDatasetMeta(d); err != nil {
			return nil, err
		}
		tmpl.Name, tmpl.Description, tmpl.Tags, tmpl.Visibility = d.Name, d.Description, d.Tags, d.Visibility
	}
	sess, err := ups.Create(tmpl)
	if err != nil {
		return nil, uploadError(err, "", 0)
	}
	// No session without its audit entry.
	if err := a.st.AppendAudit(store.AuditEvent{Actor: c.actor(), Action: "upload.create", Target: "upload/" + sess.ID,
		Detail: map[string]any{"size": sess.Size, "format": sess.Format, "name": sess.Name, "dataset_id": sess.DatasetID, "sha256": sess.SHA256}}); err != nil {
		if rerr := ups.Remove(sess.ID); rerr != nil {
			a.log.Error("remove an upload session whose audit entry failed", "upload", sess.ID, "err", rerr)
		}
		return nil, err
	}
	a.log.Info("upload started", "upload", sess.ID, "user", c.actor(), "size", sess.Size, "format", sess.Format)
	v, err := a.uploadView(ups, sess)
	if err != nil {
		return nil, err
	}
	c.w.Header().Set("Location", "/api/v1/uploads/"+sess.ID)
	c.w.Header().Set("Upload-Offset", "0")
	return v, nil
}

func (a *API) listUploads(c *call) (any, error) {
	ups, err := a.uploads()
	if err != nil {
		return nil, err
	}
	list, err := ups.List(c.actor())
	if err != nil {
		return nil, err
	}
	out := UploadList{Uploads: make([]UploadView, 0, len(list))}
	for _, sess := range list {
		v, err := a.uploadView(ups, sess)
		if err != nil {
			var he *httpError
			if errors.As(err, &he) && he.status == http.StatusNotFound {
				continue // removed meanwhile
			}
			return nil, err
		}
		out.Uploads = append(out.Uploads, v)
	}
	return out, nil
}

func (a *API) getUpload(c *call) (any, error) {
	ups, sess, err := a.session(c)
	if err != nil {
		return nil, err
	}
	v, err := a.uploadView(ups, sess)
	if err != nil {
		return nil, err
	}
	c.w.Header().Set("Upload-Offset", strconv.FormatInt(v.Offset, 10))
	return v, nil
}

func (a *API) sendChunk(c *call) (any, error) {
	ups, sess, err := a.session(c)
	if err != nil {
		return nil, err
	}
	q := c.r.URL.Query().Get("offset")
	offset, err := strconv.ParseInt(q, 10, 64)
	if err != nil || offset < 0 {
		return nil, badField("offset", "required: the number of bytes the upload has received, where this chunk starts (GET the upload to learn it)")
	}
	mt, _, err := mime.ParseMediaType(c.r.Header.Get("Content-Type"))
	if err != nil || (mt != "application/offset+octet-stream" && mt != "application/octet-stream") {
		return nil, errorf(http.StatusUnsupportedMediaType, "unsupported_media_type", "Content-Type must be application/offset+octet-stream")
	}
	// One chunk has this long to arrive, however slow the link; the
	// server's own read timeout is for ordinary requests.
	rc := http.NewResponseController(c.w)
	deadline := a.cfg.Now().Add(a.cfg.UploadChunkTimeout)
	if err := errors.Join(rc.SetReadDeadline(deadline), rc.SetWriteDeadline(deadline.Add(time.Minute))); err != nil {
		a.log.Debug("chunk deadlines", "err", err)
	}
	end, err := ups.Append(sess.ID, offset, c.r.Body, a.cfg.UploadChunkBytes)
	c.w.Header().Set("Upload-Offset", strconv.FormatInt(end, 10))
	if err != nil {
		var mbe *http.MaxBytesError
		switch {
		case errors.Is(err, resumable.ErrOffset), errors.Is(err, resumable.ErrTooLarge), errors.Is(err, resumable.ErrDone), errors.Is(err, resumable.ErrBusy), errors.Is(err, resumable.ErrNotFound):
			return nil, uploadError(err, sess.ID, end)
		case errors.As(err, &mbe):
			return nil, errorf(http.StatusRequestEntityTooLarge, "too_large", "a chunk may carry at most %d bytes", a.cfg.UploadChunkBytes)
		case end > offset || isReadError(err):
			// The connection broke or timed out: what arrived is kept.
			a.log.Info("chunk cut", "upload", sess.ID, "offset", end, "err", err)
			return nil, errorf(http.StatusBadRequest, "chunk_cut", "the chunk ended early (%v): %d bytes are stored; resume at offset %d", err, end, end)
		}
		return nil, err
	}
	return a.uploadView(ups, sess)
}

// isReadError tells a failed read of the request body (a cut connection, a
// deadline) from a failure of the gateway's own disk.
func isReadError(err error) bool {
	var pe *os.PathError
	return !errors.As(err, &pe)
}

func (a *API) finishUpload(c *call) (any, error) {
	ups, sess, err := a.session(c)
	if err != nil {
		return nil, err
	}
	var req FinishUploadRequest
	if err := c.decode(&req); err != nil {
		return nil, err
	}
	want := strings.ToLower(strings.TrimSpace(req.SHA256))
	if want != "" && !hexSHA256().MatchString(want) {
		return nil, badField("sha256", "must be 64 hex digits")
	}
	if want != "" && sess.SHA256 != "" && want != sess.SHA256 {
		return nil, badField("sha256", "differs from the one the upload was created with")
	}
	if want == "" {
		want = sess.SHA256
	}
	// Hashing and ingesting a large file takes a while: its answer may be
	// written later than the server's usual write timeout.
	if err := http.NewResponseController(c.w).SetWriteDeadline(a.cfg.Now().Add(a.cfg.UploadFinishTimeout)); err != nil {
		a.log.Debug("finish write deadline", "err", err)
	}
	ctx, cancel := context.WithTimeout(c.r.Context(), a.cfg.UploadFinishTimeout)
	defer cancel()
	var d *store.Dataset
	done, err := ups.Finish(sess.ID, func(f *os.File, sha string, size int64) (resumable.Result, error) {
		if want != "" && sha != want {
			return resumable.Result{}, errorf(http.StatusConflict, "checksum_mismatch",
				"the %d bytes received have SHA-256 %s, not %s: cancel the upload and send the file again", size, sha, want)
		}
		if err := checkFormat(f, sess.Format, size); err != nil {
			return resumable.Result{}, err
		}
		var err error
		if d, err = a.datasetFor(sess, c.actor()); err != nil {
			return resumable.Result{}, err
		}
		if err := ingest.Dataset(ctx, a.st, d, f, dataset.Limits{MaxBytes: size}); err != nil {
			var bad *ingest.BadInputError
			if errors.As(err, &bad) {
				return resumable.Result{}, errorf(http.StatusBadRequest, "bad_"+sess.Format, "file: %s", bad.Error())
			}
			return resumable.Result{}, err
		}
		return resumable.Result{DatasetID: d.ID, Version: d.Version}, nil
	})
	switch {
	case errors.Is(err, resumable.ErrDone):
		// Asked again (its answer was lost): the same dataset.
		return a.st.Dataset(done.Result.DatasetID)
	case err != nil:
		off, _ := ups.Offset(sess.ID)
		return nil, uploadError(err, sess.ID, off)
	}
	a.log.Info("upload finished", "upload", sess.ID, "dataset", d.ID, "version", d.Version, "size", d.Size)
	if err := a.st.AppendAudit(store.AuditEvent{Actor: c.actor(), Action: "upload.finish", Target: "upload/" + sess.ID,
		Detail: map[string]any{"dataset_id": d.ID, "version": d.Version, "sha256": done.Result.SHA256, "size": d.Size, "format": sess.Format}}); err != nil {
		return nil, err
	}
	if a.cfg.Hooks.DatasetAdded != nil {
		a.cfg.Hooks.DatasetAdded(d)
	}
	return d, nil
}

// datasetFor is the dataset a session's bytes become: a new one described
// by the session, or the next version of the session's dataset.
func (a *API) datasetFor(sess *resumable.Session, actor string) (*store.Dataset, error) {
	if sess.DatasetID == "" {
		return &store.Dataset{Name: sess.Name, Description: sess.Description, Tags: sess.Tags, Visibility: sess.Visibility, CreatedBy: actor}, nil
	}
	old, err := a.st.Dataset(sess.DatasetID)
	if err != nil {
		return nil, err
	}
	d := *old
	d.CreatedBy = actor
	return &d, nil
}

var parquetMagic = []byte("PAR1")

// checkFormat refuses a file whose bytes are plainly not the declared
// format: a Parquet file starts and ends with PAR1; a CSV file does not.
func checkFormat(f *os.File, format string, size int64) error {
	head := make([]byte, 4)
	n, err := f.ReadAt(head, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	isParquet := n == 4 && bytes.Equal(head, parquetMagic)
	if isParquet && size >= 8 {
		tail := make([]byte, 4)
		if _, err := f.ReadAt(tail, size-4); err != nil {
			return err
		}
		isParquet = bytes.Equal(tail, parquetMagic)
	}
	switch {
	case format == FormatParquet && !isParquet:
		return errorf(http.StatusBadRequest, "bad_parquet", "file: not a Parquet file (it does not start and end with PAR1); was it declared with the wrong format?")
	case format == FormatCSV && isParquet:
		return errorf(http.StatusBadRequest, "bad_csv", "file: this is a Parquet file: create the upload with format parquet")
	}
	return nil
}

func (a *API) cancelUpload(c *call) (any, error) {
	ups, sess, err := a.session(c)
	if err != nil {
		return nil, err
	}
	off, _ := ups.Offset(sess.ID)
	if err := ups.Remove(sess.ID); err != nil {
		return nil, uploadError(err, sess.ID, 0)
	}
	a.log.Info("upload cancelled", "upload", sess.ID, "user", c.actor())
	detail := map[string]any{"size": sess.Size, "received": off, "name": sess.Name, "dataset_id": sess.DatasetID}
	if sess.Result != nil {
		detail["finished_as"] = sess.Result.DatasetID
	}
	return nil, a.st.AppendAudit(store.AuditEvent{Actor: c.actor(), Action: "upload.cancel", Target: "upload/" + sess.ID, Detail: detail})
}

// uploadDefaults fills the upload settings left zero.
func uploadDefaults(cfg *Config) {
	if cfg.UploadChunkBytes <= 0 {
		cfg.UploadChunkBytes = defaultUploadChunk
	}
	if cfg.UploadChunkTimeout <= 0 {
		cfg.UploadChunkTimeout = defaultUploadChunkTimeout
	}
	if cfg.UploadFinishTimeout <= 0 {
		cfg.UploadFinishTimeout = defaultUploadFinishTimeout
	}
	if cfg.UploadTTL <= 0 {
		cfg.UploadTTL = defaultUploadTTL
	}
}
