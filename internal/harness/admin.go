package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"strings"
	"time"
)

// Admin is a small client of a gateway's HTTP admin API (CONTRACT.md).
type Admin struct {
	// BaseURL is the gateway's http= URL, e.g. http://127.0.0.1:8420.
	BaseURL string
	// Token is the bearer token Login stores; "" sends no Authorization.
	Token string
	// HTTP is the client used; nil = one with a 30 s timeout.
	HTTP *http.Client
}

// NewAdmin returns an Admin for the gateway at baseURL.
func NewAdmin(baseURL string) *Admin {
	return &Admin{BaseURL: strings.TrimRight(baseURL, "/"), HTTP: &http.Client{Timeout: 30 * time.Second}}
}

// APIError is a response with a 4xx/5xx status. Code and Message come from the
// contract's error document; when the body is not one, Code is "" and Body
// holds (the start of) what came instead.
type APIError struct {
	Method, Path string
	Status       int
	Code         string
	Message      string
	Body         string
}

func (e *APIError) Error() string {
	if e.Code == "" {
		return fmt.Sprintf("%s %s: HTTP %d without an error document: %.200s", e.Method, e.Path, e.Status, e.Body)
	}
	return fmt.Sprintf("%s %s: HTTP %d %s: %s", e.Method, e.Path, e.Status, e.Code, e.Message)
}

// errorDoc is the contract's error document.
type errorDoc struct {
	Error *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// Do sends a request with body (of contentType) and decodes a 2xx JSON answer
// into out (nil = ignore it). A status of 400 or more is returned as *APIError.
func (a *Admin) Do(ctx context.Context, method, path, contentType string, body io.Reader, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, a.BaseURL+path, body)
	if err != nil {
		return err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if a.Token != "" {
		req.Header.Set("Authorization", "Bearer "+a.Token)
	}
	hc := a.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode >= 400 {
		e := &APIError{Method: method, Path: path, Status: resp.StatusCode, Body: string(b)}
		var doc errorDoc
		if json.Unmarshal(b, &doc) == nil && doc.Error != nil && doc.Error.Code != "" && doc.Error.Message != "" {
			e.Code, e.Message = doc.Error.Code, doc.Error.Message
		}
		return e
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("%s %s: unexpected HTTP %d", method, path, resp.StatusCode)
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("%s %s: answer is not the JSON wanted: %v: %.200s", method, path, err, b)
	}
	return nil
}

// DoJSON sends in as a JSON body (nil = no body) and decodes the answer into out.
func (a *Admin) DoJSON(ctx context.Context, method, path string, in, out any) error {
	if in == nil {
		return a.Do(ctx, method, path, "", nil, out)
	}
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return a.Do(ctx, method, path, "application/json", bytes.NewReader(b), out)
}

// Healthz checks GET /healthz.
func (a *Admin) Healthz(ctx context.Context) error {
	return a.Do(ctx, http.MethodGet, "/healthz", "", nil, nil)
}

// Status is GET /api/v1/status.
type Status struct {
	Name      string   `json:"name"`
	PeerID    string   `json:"peer_id"`
	Addrs     []string `json:"addrs"`
	SetupDone bool     `json:"setup_done"`
}

// Status fetches the gateway's status.
func (a *Admin) Status(ctx context.Context) (*Status, error) {
	var s Status
	if err := a.DoJSON(ctx, http.MethodGet, "/api/v1/status", nil, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// User is a user as the API shows it.
type User struct {
	ID            string  `json:"id"`
	Email         string  `json:"email"`
	Name          string  `json:"name"`
	Role          string  `json:"role"`
	PeerID        string  `json:"peer_id"`
	BudgetEpsilon float64 `json:"budget_epsilon"`
}

// Setup creates the gateway's Owner (POST /api/v1/setup) with the one-time
// setup token the gateway printed (Proc.SetupToken).
func (a *Admin) Setup(ctx context.Context, setupToken, email, password, name string) (*User, error) {
	var u User
	err := a.DoJSON(ctx, http.MethodPost, "/api/v1/setup", map[string]string{"email": email, "password": password, "name": name, "setup_token": setupToken}, &u)
	if err != nil {
		return nil, err
	}
	return &u, nil
}

// Login exchanges email and password for a bearer token, which later calls send.
func (a *Admin) Login(ctx context.Context, email, password string) error {
	var r struct {
		Token     string    `json:"token"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	if err := a.DoJSON(ctx, http.MethodPost, "/api/v1/auth/login", map[string]string{"email": email, "password": password}, &r); err != nil {
		return err
	}
	if r.Token == "" {
		return fmt.Errorf("POST /api/v1/auth/login: no token in the answer")
	}
	a.Token = r.Token
	return nil
}

// NewUser is the body of POST /api/v1/users.
type NewUser struct {
	Email    string `json:"email"`
	Password string `json:"password"`
	Name     string `json:"name,omitempty"`
	Role     string `json:"role,omitempty"`
	PeerID   string `json:"peer_id,omitempty"`
}

// RoleDataScientist is the default role of a data scientist.
const RoleDataScientist = "Data Scientist"

// CreateUser creates a user.
func (a *Admin) CreateUser(ctx context.Context, nu NewUser) (*User, error) {
	var u User
	if err := a.DoJSON(ctx, http.MethodPost, "/api/v1/users", nu, &u); err != nil {
		return nil, err
	}
	return &u, nil
}

// Column is a dataset column's name and inferred type.
type Column struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

// Dataset is a dataset's description as the API shows it.
type Dataset struct {
	ID          string   `json:"id"`
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Tags        []string `json:"tags"`
	Visibility  string   `json:"visibility"`
	Columns     []Column `json:"columns"`
	Rows        int      `json:"rows"`
}

// Upload is a CSV upload (POST /api/v1/datasets, multipart/form-data).
type Upload struct {
	Name        string
	Tags        []string
	Description string
	Visibility  string // public or private
	FileName    string // the file part's name; default data.csv
	CSV         []byte
}

// UploadCSV uploads a dataset.
func (a *Admin) UploadCSV(ctx context.Context, up Upload) (*Dataset, error) {
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	fields := [][2]string{{"name", up.Name}, {"tags", strings.Join(up.Tags, ",")}, {"description", up.Description}, {"visibility", up.Visibility}}
	for _, f := range fields {
		if f[1] == "" {
			continue
		}
		if err := mw.WriteField(f[0], f[1]); err != nil {
			return nil, err
		}
	}
	name := up.FileName
	if name == "" {
		name = "data.csv"
	}
	fw, err := mw.CreateFormFile("file", name)
	if err != nil {
		return nil, err
	}
	if _, err := fw.Write(up.CSV); err != nil {
		return nil, err
	}
	if err := mw.Close(); err != nil {
		return nil, err
	}
	var ds Dataset
	if err := a.Do(ctx, http.MethodPost, "/api/v1/datasets", mw.FormDataContentType(), &body, &ds); err != nil {
		return nil, err
	}
	return &ds, nil
}

// Datasets lists the gateway's datasets.
func (a *Admin) Datasets(ctx context.Context) ([]Dataset, error) {
	var r struct {
		Datasets []Dataset `json:"datasets"`
	}
	if err := a.DoJSON(ctx, http.MethodGet, "/api/v1/datasets", nil, &r); err != nil {
		return nil, err
	}
	return r.Datasets, nil
}

// JoinToken makes a single-use node join token.
func (a *Admin) JoinToken(ctx context.Context) (string, error) {
	var r struct {
		Token string `json:"token"`
	}
	if err := a.DoJSON(ctx, http.MethodPost, "/api/v1/nodes/join-tokens", map[string]any{}, &r); err != nil {
		return "", err
	}
	if r.Token == "" {
		return "", fmt.Errorf("POST /api/v1/nodes/join-tokens: no token in the answer")
	}
	return r.Token, nil
}

// AdminJob is a job as the admin API shows it.
type AdminJob struct {
	ID        string `json:"id"`
	DatasetID string `json:"dataset_id"`
	UserID    string `json:"user_id"`
	Requester string `json:"requester"`
	State     string `json:"state"`
	Attempt   int    `json:"attempt"`
	Node      string `json:"node"`
	Error     string `json:"error"`
}

// Jobs lists the jobs the logged-in user may see.
func (a *Admin) Jobs(ctx context.Context) ([]AdminJob, error) {
	var r struct {
		Jobs []AdminJob `json:"jobs"`
	}
	if err := a.DoJSON(ctx, http.MethodGet, "/api/v1/jobs", nil, &r); err != nil {
		return nil, err
	}
	return r.Jobs, nil
}
