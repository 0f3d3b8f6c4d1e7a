package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/fedgrid/fedgrid/adminclient"
)

// uploadFlags are `fedgrid admin datasets upload`'s options.
type uploadFlags struct {
	name, tags, description, visibility, format, dataset string
	restart                                              bool
	chunk                                                string
}

// uploadFinishTimeout bounds the gateway's check and ingest of a finished upload.
const uploadFinishTimeout = 2 * time.Hour

// uploadState is what the CLI keeps of an upload in progress, so that a
// second run after it was killed (or lost its connection for good) goes on
// where the gateway's bytes end.
type uploadState struct {
	Version  int       `json:"version"`
	Gateway  string    `json:"gateway"`
	File     string    `json:"file"`
	Size     int64     `json:"size"`
	Modified time.Time `json:"modified"`
	UploadID string    `json:"upload_id"`
}

const uploadStateVersion = 1

// uploadStatePath is the state file of one (gateway, file as it is now,
// target) in the user's cache directory.
func uploadStatePath(gateway, file string, fi os.FileInfo, target string) (string, error) {
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no cache directory to keep the upload's state: %w", err)
	}
	key := sha256.Sum256([]byte(strings.Join([]string{gateway, file, strconv.FormatInt(fi.Size(), 10), fi.ModTime().UTC().Format(time.RFC3339Nano), target}, "\x00")))
	return filepath.Join(dir, "fedgrid", "uploads", hex.EncodeToString(key[:16])+".json"), nil
}

func loadUploadState(path string) *uploadState {
	b, err := os.ReadFile(path)
	if err != nil || len(b) > 64<<10 {
		return nil
	}
	var st uploadState
	if json.Unmarshal(b, &st) != nil || st.Version != uploadStateVersion || st.UploadID == "" {
		return nil
	}
	return &st
}

func saveUploadState(path string, st *uploadState) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// detectFormat is --format, else parquet for a .parquet/.pq file or one
// that starts with PAR1, else csv.
func detectFormat(flag, name string, f io.ReaderAt) (string, error) {
	switch flag {
	case "csv", "parquet":
		return flag, nil
	case "":
	default:
		return "", usagef("--format must be csv or parquet")
	}
	switch strings.ToLower(filepath.Ext(name)) {
	case ".parquet", ".pq":
		return "parquet", nil
	}
	head := make([]byte, 4)
	if n, _ := f.ReadAt(head, 0); n == 4 && bytes.Equal(head, []byte("PAR1")) {
		return "parquet", nil
	}
	return "csv", nil
}

// progressBar redraws one line on a terminal: bytes held by the gateway,
// percent, and the rate since this run started.
type progressBar struct {
	w     io.Writer
	start time.Time
	from  int64 // offset when this run started
	last  time.Time
}

func (p *progressBar) update(done, total int64) {
	now := time.Now()
	if done < total && now.Sub(p.last) < 200*time.Millisecond {
		return
	}
	p.last = now
	rate := ""
	if el := now.Sub(p.start).Seconds(); el > 0 && done > p.from {
		rate = "  " + fmtBytes(int64(float64(done-p.from)/el)) + "/s"
	}
	pct := 100 * float64(done) / float64(max(total, 1))
	fmt.Fprintf(p.w, "\r%s / %s  %5.1f%%%s\033[K", fmtBytes(done), fmtBytes(total), pct, rate)
}

func (p *progressBar) end() { fmt.Fprintln(p.w) }

// uploadFile sends args[0] through the resumable upload API and prints the
// dataset it became.
func (a *admin) uploadFile(up *uploadFlags, file string) error {
	ctx := a.cmd.Context() // not the command's 2-minute bound: each request has its own
	if up.visibility != "" && up.visibility != "public" && up.visibility != "private" {
		return usagef("--visibility must be public or private")
	}
	var chunk int64
	if up.chunk != "" {
		n, err := parseSize(up.chunk)
		if err != nil {
			return usagef("--chunk-size: %v", err)
		}
		chunk = n
	}
	abs, err := filepath.Abs(file)
	if err != nil {
		return err
	}
	f, err := os.Open(abs)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file", file)
	}
	if fi.Size() == 0 {
		return fmt.Errorf("%s is empty", file)
	}
	format, err := detectFormat(up.format, abs, f)
	if err != nil {
		return err
	}
	req := adminclient.NewUpload{Size: fi.Size(), Format: format}
	if up.dataset != "" {
		if a.changed("name") || a.changed("tags") || a.changed("description") || a.changed("visibility") {
			return usagef("--dataset uploads a new version, which keeps the dataset's name, tags, description and visibility (change them with fedgrid admin datasets edit)")
		}
		cctx, cancel := context.WithTimeout(ctx, adminCallTimeout)
		req.DatasetID, err = a.datasetID(cctx, up.dataset)
		cancel()
		if err != nil {
			return err
		}
	} else {
		req.Name = strings.TrimSpace(up.name)
		if req.Name == "" {
			req.Name = strings.TrimSuffix(filepath.Base(abs), filepath.Ext(abs))
		}
		req.Tags, req.Description, req.Visibility = splitTags(up.tags), up.description, up.visibility
	}

	statePath, err := uploadStatePath(a.cl.BaseURL, abs, fi, req.DatasetID)
	if err != nil {
		return err
	}
	var view *adminclient.UploadView
	if st := loadUploadState(statePath); st != nil {
		cctx, cancel := context.WithTimeout(ctx, adminclient.DefaultTimeout)
		if up.restart {
			_, _ = a.cl.Do(cctx, http.MethodDelete, "/api/v1/uploads/"+adminclient.PathEscape(st.UploadID), nil, "", nil)
		} else if v, err := a.cl.UploadState(cctx, st.UploadID); err == nil && v.Size == fi.Size() {
			view = v
			fmt.Fprintf(a.g.stderr, "resuming upload %s at %s of %s\n", v.ID, fmtBytes(v.Offset), fmtBytes(v.Size))
		} else if err != nil && adminclient.StatusOf(err) != http.StatusNotFound {
			cancel()
			return err
		}
		cancel()
	}
	if view == nil {
		cctx, cancel := context.WithTimeout(ctx, adminclient.DefaultTimeout)
		view, err = a.cl.Start(cctx, req)
		cancel()
		if err != nil {
			return err
		}
		if err := saveUploadState(statePath, &uploadState{Version: uploadStateVersion, Gateway: a.cl.BaseURL, File: abs,
			Size: fi.Size(), Modified: fi.ModTime().UTC(), UploadID: view.ID}); err != nil {
			return fmt.Errorf("keep the upload's state: %w", err)
		}
	}

	var raw json.RawMessage
	if view.State == "finished" && view.Result != nil {
		// Finished by an earlier run that did not live to say so.
		raw, err = a.call(ctx, http.MethodGet, "/api/v1/datasets/"+adminclient.PathEscape(view.Result.DatasetID), nil, nil, nil)
		if err != nil {
			return err
		}
	} else {
		s := &adminclient.Sender{Client: a.cl, ChunkBytes: chunk,
			Retrying: func(err error, attempt int, wait time.Duration) {
				fmt.Fprintf(a.g.stderr, "\rupload interrupted (%v); retry %d in %s from the gateway's offset\033[K\n", err, attempt, wait.Round(100*time.Millisecond))
			}}
		var bar *progressBar
		if !a.af.json && a.g.stderrIsTerminal() {
			bar = &progressBar{w: a.g.stderr, start: time.Now(), from: view.Offset}
			s.Progress = bar.update
			bar.update(view.Offset, view.Size)
		}
		sha, err := s.Send(ctx, view, f, fi.Size())
		if bar != nil {
			bar.end()
		}
		if err != nil {
			return fmt.Errorf("upload %s: %w (run the same command again to resume)", view.ID, err)
		}
		if raw, err = a.finish(ctx, view.ID, sha); err != nil {
			return err
		}
	}
	_ = os.Remove(statePath)
	var d apiDataset
	if err := json.Unmarshal(raw, &d); err != nil {
		return fmt.Errorf("the gateway's answer is not a dataset: %v", err)
	}
	return a.show(raw, func() error {
		fmt.Fprintf(a.g.stdout, "uploaded %s as dataset %s\n", file, d.ID)
		return a.fields(d.fields())
	})
}

// finish asks the gateway to store the upload; when the answer is lost it
// asks again (a finished upload answers with its dataset).
func (a *admin) finish(ctx context.Context, id, sha string) (json.RawMessage, error) {
	var err error
	for attempt := 1; attempt <= 3; attempt++ {
		var raw json.RawMessage
		raw, err = a.cl.Finish(ctx, id, sha, uploadFinishTimeout)
		var ae *adminclient.Error
		if err == nil || errors.As(err, &ae) && ae.Code != "upload_busy" || ctx.Err() != nil {
			return raw, err
		}
		fmt.Fprintf(a.g.stderr, "finishing upload %s: %v; asking again\n", id, err)
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(time.Duration(attempt) * 2 * time.Second):
		}
	}
	return nil, err
}

// parseSize reads a byte count such as 8MiB or 1048576.
func parseSize(s string) (int64, error) {
	t := strings.TrimSuffix(strings.TrimSpace(s), "B")
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"K", 1000}, {"k", 1000}, {"M", 1000_000}, {"G", 1000_000_000}} {
		if v, ok := strings.CutSuffix(t, u.suffix); ok {
			t, mult = v, u.m
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(t), 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%q is not a size (say 8MiB or 1048576)", s)
	}
	return n * mult, nil
}
