// Package adminclient is a small client of a gateway's HTTP admin API, the
// one `fedgrid admin` uses. It speaks JSON, turns the API's error document
// into an *Error a person can read, and bounds every answer's size and time.
// It knows the routes only as paths: callers decode the answers they need.
package adminclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// MaxAnswer bounds the size of an answer the client reads.
const MaxAnswer = 32 << 20

// DefaultTimeout bounds one call when Client.HTTP is nil.
const DefaultTimeout = 60 * time.Second

// Client calls one gateway's HTTP API.
type Client struct {
	// BaseURL is the gateway's http= URL, without a trailing slash.
	BaseURL string
	// Token is the bearer token sent with every call; "" sends none.
	Token string
	// HTTP is the client used; nil = one with DefaultTimeout.
	HTTP *http.Client
}

// New checks baseURL (an http or https URL with a host and no query) and
// returns a Client for it.
func New(baseURL string) (*Client, error) {
	u, err := NormalizeURL(baseURL)
	if err != nil {
		return nil, err
	}
	return &Client{BaseURL: u, HTTP: &http.Client{Timeout: DefaultTimeout}}, nil
}

// NormalizeURL checks a gateway URL and returns it without a trailing slash.
// A bare host:port is taken as http://host:port.
func NormalizeURL(raw string) (string, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return "", errors.New("no gateway URL")
	}
	if !strings.Contains(raw, "://") {
		raw = "http://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("gateway URL %q: %v", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("gateway URL %q: the scheme must be http or https", raw)
	}
	if u.Host == "" {
		return "", fmt.Errorf("gateway URL %q has no host", raw)
	}
	if u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return "", fmt.Errorf("gateway URL %q: give only scheme, host, port and path", raw)
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// Error is an answer with a status of 400 or more.
type Error struct {
	Method, Path string
	Status       int
	// Code and Message come from the API's error document; without one,
	// Code is "" and Body holds the start of what came instead.
	Code, Message string
	Body          string
}

func (e *Error) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("the gateway answered %s %s with HTTP %d %s and no error message: %.200q",
			e.Method, e.Path, e.Status, http.StatusText(e.Status), e.Body)
	}
	msg := e.Message
	switch e.Status {
	case http.StatusUnauthorized:
		if e.Code != "invalid_credentials" {
			msg += " (log in again: fedgrid admin login)"
		}
	case http.StatusForbidden:
		msg = "not allowed: " + msg
	case http.StatusNotFound:
		msg += ": " + e.Path
	}
	return fmt.Sprintf("%s (%s, HTTP %d)", msg, e.Code, e.Status)
}

// StatusOf returns the HTTP status of an *Error in err, or 0.
func StatusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

// Do sends one request and returns the answer's body when its status is
// 2xx (empty for 204). query may be nil; body may be nil.
func (c *Client) Do(ctx context.Context, method, path string, query url.Values, contentType string, body io.Reader) ([]byte, error) {
	target := c.BaseURL + path
	if len(query) > 0 {
		target += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/json")
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: DefaultTimeout}
	}
	resp, err := hc.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("cannot reach the gateway at %s: %w", c.BaseURL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxAnswer+1))
	if err != nil {
		return nil, fmt.Errorf("%s %s: reading the answer: %w", method, path, err)
	}
	if len(b) > MaxAnswer {
		return nil, fmt.Errorf("%s %s: the answer is larger than %d bytes", method, path, MaxAnswer)
	}
	if resp.StatusCode >= 400 {
		e := &Error{Method: method, Path: path, Status: resp.StatusCode, Body: string(b)}
		var doc struct {
			Error *struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		if json.Unmarshal(b, &doc) == nil && doc.Error != nil && doc.Error.Code != "" {
			e.Code, e.Message = doc.Error.Code, doc.Error.Message
		}
		return nil, e
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, fmt.Errorf("%s %s: unexpected HTTP %d", method, path, resp.StatusCode)
	}
	return b, nil
}

// JSON sends in as a JSON body (nil = no body) and decodes a JSON answer
// into out (nil = ignore it; a *json.RawMessage keeps it as sent).
func (c *Client) JSON(ctx context.Context, method, path string, query url.Values, in, out any) error {
	var body io.Reader
	ct := ""
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body, ct = bytes.NewReader(b), "application/json"
	}
	b, err := c.Do(ctx, method, path, query, ct, body)
	if err != nil {
		return err
	}
	return decode(method, path, b, out)
}

func decode(method, path string, b []byte, out any) error {
	if out == nil || len(bytes.TrimSpace(b)) == 0 {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: the answer is not the JSON expected: %v", method, path, err)
	}
	return nil
}

// Field is one form field of a multipart upload.
type Field struct{ Name, Value string }

// Upload posts a multipart/form-data form: fields (empty values left out)
// and a file part named "file" with fileName and the content of file.
func (c *Client) Upload(ctx context.Context, path string, fields []Field, fileName string, file io.Reader, out any) error {
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	for _, f := range fields {
		if f.Value == "" {
			continue
		}
		if err := mw.WriteField(f.Name, f.Value); err != nil {
			return err
		}
	}
	fw, err := mw.CreateFormFile("file", fileName)
	if err != nil {
		return err
	}
	if _, err := io.Copy(fw, file); err != nil {
		return err
	}
	if err := mw.Close(); err != nil {
		return err
	}
	b, err := c.Do(ctx, http.MethodPost, path, nil, mw.FormDataContentType(), &body)
	if err != nil {
		return err
	}
	return decode(http.MethodPost, path, b, out)
}

// PathEscape escapes one path segment (an ID, a name).
func PathEscape(s string) string { return url.PathEscape(s) }
