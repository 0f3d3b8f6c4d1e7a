package api

import (
	"errors"
	"io"
	"mime"
	"net/http"
	"slices"
)

// upload is a multipart/form-data body: one "file" part and a few short
// text fields.
type upload struct {
	file     []byte
	fileName string
	fields   map[string]string
}

// readUpload reads an upload whose file part is required and at most limit
// bytes (tooBig is the 413's message) and whose other parts are the named
// text fields, each at most once.
func readUpload(c *call, limit int64, tooBig, fileHelp string, fieldNames ...string) (*upload, error) {
	mt, _, err := mime.ParseMediaType(c.r.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/form-data" {
		return nil, errorf(http.StatusUnsupportedMediaType, "unsupported_media_type", "Content-Type must be multipart/form-data")
	}
	mr, err := c.r.MultipartReader()
	if err != nil {
		return nil, errorf(http.StatusBadRequest, "bad_multipart", "malformed multipart body: %v", err)
	}
	u := &upload{fields: map[string]string{}}
	haveFile := false
	for {
		part, err := mr.NextPart()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, multipartError(err)
		}
		name := part.FormName()
		switch {
		case name == "file":
			if haveFile {
				return nil, badField("file", "given twice")
			}
			haveFile = true
			u.fileName = part.FileName()
			u.file, err = io.ReadAll(io.LimitReader(part, limit+1))
			if err != nil {
				return nil, multipartError(err)
			}
			if int64(len(u.file)) > limit {
				return nil, errorf(http.StatusRequestEntityTooLarge, "too_large", "%s", tooBig)
			}
		case slices.Contains(fieldNames, name):
			if _, dup := u.fields[name]; dup {
				return nil, badField(name, "given twice")
			}
			b, err := io.ReadAll(io.LimitReader(part, maxMultipartField+1))
			if err != nil {
				return nil, multipartError(err)
			}
			if len(b) > maxMultipartField {
				return nil, badField(name, "longer than %d bytes", maxMultipartField)
			}
			u.fields[name] = string(b)
		default:
			return nil, badField(name, "unknown form field")
		}
		_ = part.Close()
	}
	if !haveFile {
		return nil, badField("file", "required: %s", fileHelp)
	}
	return u, nil
}
