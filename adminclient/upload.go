package adminclient

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// UploadView is what the gateway says of a resumable upload.
type UploadView struct {
	ID            string `json:"id"`
	Size          int64  `json:"size"`
	Offset        int64  `json:"offset"`
	State         string `json:"state"` // receiving, complete or finished
	ChunkMaxBytes int64  `json:"chunk_max_bytes"`
	Result        *struct {
		DatasetID string `json:"dataset_id"`
		Version   int    `json:"version"`
		SHA256    string `json:"sha256"`
	} `json:"result"`
}

// NewUpload is POST /api/v1/uploads's body.
type NewUpload struct {
	Size        int64    `json:"size"`
	Format      string   `json:"format,omitempty"`
	Name        string   `json:"name,omitempty"`
	Description string   `json:"description,omitempty"`
	Tags        []string `json:"tags,omitempty"`
	Visibility  string   `json:"visibility,omitempty"`
	DatasetID   string   `json:"dataset_id,omitempty"`
	SHA256      string   `json:"sha256,omitempty"`
}

// Sender sends a file to a resumable upload, chunk by chunk, from where the
// gateway's bytes end; a cut connection, a timeout or a gateway restart is
// retried by asking the gateway's offset and going on from there.
type Sender struct {
	Client *Client
	// ChunkBytes is the most bytes one request carries (default 8 MiB, at
	// most the gateway's chunk_max_bytes); one chunk is held in memory.
	ChunkBytes int64
	// ChunkTimeout bounds one chunk's request (default 10 min).
	ChunkTimeout time.Duration
	// Retries is how many failures in a row, with no byte stored between
	// them, end the upload (default 8). Waits grow from 0.5 s to 15 s.
	Retries int
	// Progress, when set, is called after each stored chunk with the bytes
	// the gateway holds and the total.
	Progress func(done, total int64)
	// Retrying, when set, is called before a retry with the failure.
	Retrying func(err error, attempt int, wait time.Duration)

	h      hash.Hash
	hashed int64
}

// Start creates an upload.
func (c *Client) Start(ctx context.Context, req NewUpload) (*UploadView, error) {
	var v UploadView
	if err := c.JSON(ctx, http.MethodPost, "/api/v1/uploads", nil, req, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// UploadState asks the gateway for an upload's offset and state.
func (c *Client) UploadState(ctx context.Context, id string) (*UploadView, error) {
	var v UploadView
	if err := c.JSON(ctx, http.MethodGet, "/api/v1/uploads/"+PathEscape(id), nil, nil, &v); err != nil {
		return nil, err
	}
	return &v, nil
}

// Finish asks the gateway to check the upload (sha: the file's hex SHA-256,
// or "") and store it; it returns the dataset as the gateway shows it.
// Finishing a large file takes a while: timeout bounds the wait.
func (c *Client) Finish(ctx context.Context, id, sha string, timeout time.Duration) (json.RawMessage, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	body := map[string]string{}
	if sha != "" {
		body["sha256"] = sha
	}
	b, _ := json.Marshal(body)
	path := "/api/v1/uploads/" + PathEscape(id) + "/finish"
	raw, err := c.long().Do(ctx, http.MethodPost, path, nil, "application/json", bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	return json.RawMessage(raw), nil
}

// long is the client with no overall timeout (the caller's context bounds
// each request), for chunks and finishing.
func (c *Client) long() *Client {
	cc := *c
	hc := &http.Client{}
	if c.HTTP != nil {
		*hc = *c.HTTP
	}
	hc.Timeout = 0
	cc.HTTP = hc
	return &cc
}

// Send sends f's size bytes to upload up (as Start or UploadState returned
// it) until the gateway holds them all, and returns the hex SHA-256 of the
// file as read. ctx ends it; a refusal (not a cut) ends it at once.
func (s *Sender) Send(ctx context.Context, up *UploadView, f io.ReaderAt, size int64) (string, error) {
	if up.Size != size {
		return "", fmt.Errorf("the upload %s expects %d bytes, the file has %d", up.ID, up.Size, size)
	}
	chunk := s.ChunkBytes
	if chunk <= 0 {
		chunk = 8 << 20
	}
	if up.ChunkMaxBytes > 0 {
		chunk = min(chunk, up.ChunkMaxBytes)
	}
	timeout := s.ChunkTimeout
	if timeout <= 0 {
		timeout = 10 * time.Minute
	}
	retries := s.Retries
	if retries <= 0 {
		retries = 8
	}
	s.h, s.hashed = sha256.New(), 0
	buf := make([]byte, chunk)
	cl := s.Client.long()
	off := up.Offset
	failures := 0
	for off < size {
		n := min(chunk, size-off)
		if _, err := f.ReadAt(buf[:n], off); err != nil && !(errors.Is(err, io.EOF) && n > 0) {
			return "", fmt.Errorf("read the file at byte %d: %w", off, err)
		}
		end, err := s.sendChunk(ctx, cl, up.ID, off, buf[:n], timeout)
		if err == nil {
			if err := s.hashTo(f, off, buf[:n], end); err != nil {
				return "", err
			}
			off, failures = end, 0
			if s.Progress != nil {
				s.Progress(off, size)
			}
			continue
		}
		if !retryable(err) || ctx.Err() != nil {
			return "", err
		}
		failures++
		if failures > retries {
			return "", fmt.Errorf("gave up after %d failures in a row: %w", failures, err)
		}
		wait := min(500*time.Millisecond<<(failures-1), 15*time.Second)
		if s.Retrying != nil {
			s.Retrying(err, failures, wait)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(wait):
		}
		// Where did the gateway's bytes end? (A cut chunk keeps what arrived.)
		sctx, cancel := context.WithTimeout(ctx, DefaultTimeout)
		st, serr := s.Client.UploadState(sctx, up.ID)
		cancel()
		if serr != nil {
			if !retryable(serr) {
				return "", serr
			}
			continue
		}
		if st.Offset > off {
			failures = 0 // bytes were stored: progress, not a failure
		}
		off = st.Offset
		if s.Progress != nil {
			s.Progress(off, size)
		}
	}
	if err := s.hashTo(f, off, nil, off); err != nil {
		return "", err
	}
	return hex.EncodeToString(s.h.Sum(nil)), nil
}

// hashTo brings the file's hash up to byte end: from the file for bytes
// before off (sent before this process, or cut), then from chunk, which
// holds the bytes from off.
func (s *Sender) hashTo(f io.ReaderAt, off int64, chunk []byte, end int64) error {
	if s.hashed < off {
		if _, err := io.Copy(s.h, io.NewSectionReader(f, s.hashed, off-s.hashed)); err != nil {
			return fmt.Errorf("read the file to hash it: %w", err)
		}
		s.hashed = off
	}
	if s.hashed < end {
		s.h.Write(chunk[s.hashed-off : end-off])
		s.hashed = end
	}
	return nil
}

func (s *Sender) sendChunk(ctx context.Context, cl *Client, id string, off int64, b []byte, timeout time.Duration) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	raw, err := cl.Do(ctx, http.MethodPatch, "/api/v1/uploads/"+PathEscape(id), url.Values{"offset": {strconv.FormatInt(off, 10)}},
		"application/offset+octet-stream", bytes.NewReader(b))
	if err != nil {
		return 0, err
	}
	var v UploadView
	if err := decode(http.MethodPatch, "/api/v1/uploads/"+id, raw, &v); err != nil {
		return 0, err
	}
	if v.Offset < off || v.Offset > off+int64(len(b)) {
		return 0, fmt.Errorf("the gateway reports offset %d after a chunk of %d bytes at %d", v.Offset, len(b), off)
	}
	return v.Offset, nil
}

// retryable tells a cut or a passing state (retry from the gateway's
// offset) from a refusal (stop).
func retryable(err error) bool {
	var e *Error
	if !errors.As(err, &e) {
		return true // no answer: the connection failed or timed out
	}
	switch e.Code {
	case "offset_mismatch", "upload_busy", "chunk_cut":
		return true
	}
	switch e.Status {
	case http.StatusRequestTimeout, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}
