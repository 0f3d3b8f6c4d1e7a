// Package api serves the gateway's HTTP admin API (CONTRACT.md) on top of
// gateway/store. Every route is declared once in a table (routes.go) that
// drives both the HTTP mux and the OpenAPI document at /api/v1/openapi.json.
package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/fedgrid/fedgrid/internal/strictjson"

	"github.com/fedgrid/fedgrid/gateway/service"
	"github.com/fedgrid/fedgrid/gateway/sources"
	"github.com/fedgrid/fedgrid/gateway/store"
	resumable "github.com/fedgrid/fedgrid/gateway/upload"
	"github.com/fedgrid/fedgrid/wire"
)

// Config configures the API.
type Config struct {
	Store *store.Store
	// Service is the service layer the gateway's transports share (nil: one
	// over Store, with Hooks.JobCancelled as its hook).
	Service *service.Service
	Name    string          // display name
	PeerID  func() string   // for /api/v1/status; may be nil
	Addrs   func() []string // for /api/v1/status; may be nil
	Hooks   Hooks           // called after commits so the gateway wiring can react
	Logger  *slog.Logger    // nil: discard
	// Sources registers and snapshots dataset sources (PostgreSQL); nil:
	// the source routes answer 503.
	Sources *sources.Manager
	// MaxUploadBytes bounds a dataset upload's CSV (default 64 MiB).
	MaxUploadBytes int64
	// Uploads keeps the resumable upload sessions (/api/v1/uploads); nil:
	// those routes answer 503. Its MaxSize bounds one upload.
	Uploads *resumable.Store
	// UploadChunkBytes bounds one chunk of a resumable upload (default 64
	// MiB); UploadChunkTimeout is how long one chunk may take to arrive
	// (default 10 min); UploadFinishTimeout bounds checking and ingesting an
	// upload when it is finished (default 2 h); UploadTTL is how long an
	// untouched session lives (default 24 h; the gateway's sweep removes it).
	UploadChunkBytes    int64
	UploadChunkTimeout  time.Duration
	UploadFinishTimeout time.Duration
	UploadTTL           time.Duration
	// TokenTTL is how long a login token lasts (default 12 h).
	TokenTTL time.Duration
	// JoinTokenTTL is how long a node join token lasts unless the request says (default 24 h).
	JoinTokenTTL time.Duration
	// LoginMaxFailures login attempts per (email, client address), twice as
	// many per email across addresses and ten times as many per client
	// address across emails are allowed within LoginWindow before further
	// attempts get 429 (defaults 5 and 15 min). Attempts are counted before
	// the password is checked; a successful login gives its attempt back.
	LoginMaxFailures int
	LoginWindow      time.Duration
	// SetupToken is the one-time token POST /api/v1/setup needs (the gateway
	// prints it on its first start); empty: setup is refused.
	SetupToken string
	// Now is the clock (default time.Now); tests move it.
	Now func() time.Time
}

// Hooks let the gateway react to changes made over HTTP. Any may be nil.
// Each is called after the change has been committed.
type Hooks struct {
	// DatasetAdded is called after an upload and after a metadata update, with the new version.
	DatasetAdded   func(*store.Dataset)
	DatasetRemoved func(*store.Dataset)
	JobCancelled   func(*store.Job)
	NodeRemoved    func(peerID string)
	// IndexState reports a dataset's DHT indexing state for the dataset views.
	IndexState func(datasetID string) Indexing
	// Preview draws n synthetic preview rows of a dataset (never real rows).
	Preview func(datasetID string, n int) (*wire.CatalogPreview, error)
}

// Limits on request bodies.
const (
	maxJSONBody         = 64 << 10
	defaultMaxUpload    = 64 << 20
	multipartOverhead   = 1 << 20
	maxMultipartField   = 16 << 10
	defaultTokenTTL     = 12 * time.Hour
	defaultJoinTokenTTL = 24 * time.Hour
	maxJoinTokenTTL     = 30 * 24 * time.Hour
)

// API is the HTTP admin API.
type API struct {
	cfg       Config
	st        *store.Store
	svc       *service.Service
	log       *slog.Logger
	mux       *http.ServeMux
	routes    []*route
	setupDone atomic.Bool
	throttle  *throttle // login attempts per account, client address and both
	openapi   []byte
}

// New checks cfg and builds the API.
func New(cfg Config) (*API, error) {
	if cfg.Store == nil {
		return nil, errors.New("api: Config.Store is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.MaxUploadBytes <= 0 {
		cfg.MaxUploadBytes = defaultMaxUpload
	}
	uploadDefaults(&cfg)
	if cfg.TokenTTL <= 0 {
		cfg.TokenTTL = defaultTokenTTL
	}
	if cfg.JoinTokenTTL <= 0 {
		cfg.JoinTokenTTL = defaultJoinTokenTTL
	}
	if cfg.LoginMaxFailures <= 0 {
		cfg.LoginMaxFailures = 5
	}
	if cfg.LoginWindow <= 0 {
		cfg.LoginWindow = 15 * time.Minute
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Service == nil {
		cfg.Service = service.New(service.Config{Store: cfg.Store, Logger: cfg.Logger, Hooks: service.Hooks{JobCancelled: cfg.Hooks.JobCancelled}})
	}
	a := &API{cfg: cfg, st: cfg.Store, svc: cfg.Service, log: cfg.Logger, mux: http.NewServeMux(),
		throttle: newThrottle(cfg.LoginWindow, cfg.Now)}
	a.routes = a.routeTable()
	byPattern := map[string][]*route{}
	var order []string
	for _, rt := range a.routes {
		if _, ok := byPattern[rt.path]; !ok {
			order = append(order, rt.path)
		}
		byPattern[rt.path] = append(byPattern[rt.path], rt)
	}
	for _, p := range order {
		a.mux.Handle(p, a.dispatch(byPattern[p]))
	}
	a.mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.writeError(w, r, errorf(http.StatusNotFound, "not_found", "no route %s %s", r.Method, r.URL.Path))
	}))
	doc, err := a.openAPI()
	if err != nil {
		return nil, err
	}
	a.openapi = doc
	return a, nil
}

// Handler returns the API's http.Handler.
func (a *API) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				a.log.Error("handler panic", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(v))
				a.writeError(w, r, errorf(http.StatusInternalServerError, "internal", "internal error"))
			}
		}()
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Cache-Control", "no-store")
		a.mux.ServeHTTP(w, r)
	})
}

// access says who may call a route.
type access int

const (
	accessAnyone   access = iota // no token, also before setup
	accessPublic                 // no token, after setup
	accessUser                   // any valid token
	accessPerm                   // a token whose role has route.perm
	accessJobOwner               // a token; the handler restricts to own jobs unless can_triage_requests
)

// route is one entry of the route table.
type route struct {
	method  string
	path    string // http.ServeMux pattern without the method
	summary string
	access  access
	perm    store.Permission
	// req is a zero value of the JSON request body type (nil: no body);
	// multipart marks a multipart/form-data upload instead.
	req       any
	optional  bool // the JSON body may be omitted
	multipart bool
	// chunk marks a body of raw bytes (application/offset+octet-stream),
	// at most Config.UploadChunkBytes.
	chunk  bool
	query  []param
	status int // success status
	resp   any // zero value of the success body type
	handle func(c *call) (any, error)
}

type param struct{ name, desc string }

// call is one request in flight.
type call struct {
	a    *API
	w    http.ResponseWriter
	r    *http.Request
	rt   *route
	user *store.User // nil for anonymous routes
	// who is the caller as the service layer sees it (routes with a token).
	who service.Actor
}

func (a *API) dispatch(rs []*route) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var rt *route
		for _, x := range rs {
			if x.method == r.Method || (r.Method == http.MethodHead && x.method == http.MethodGet) {
				rt = x
				break
			}
		}
		if rt == nil {
			var allow []string
			for _, x := range rs {
				allow = append(allow, x.method)
			}
			w.Header().Set("Allow", strings.Join(allow, ", "))
			a.writeError(w, r, errorf(http.StatusMethodNotAllowed, "method_not_allowed", "%s is not allowed on %s; use %s", r.Method, r.URL.Path, strings.Join(allow, " or ")))
			return
		}
		a.serve(rt, w, r)
	})
}

func (a *API) serve(rt *route, w http.ResponseWriter, r *http.Request) {
	limit := int64(maxJSONBody)
	switch {
	case rt.multipart:
		limit = a.cfg.MaxUploadBytes + multipartOverhead
	case rt.chunk:
		limit = a.cfg.UploadChunkBytes + 1 // one more tells a chunk too long
	}
	r.Body = http.MaxBytesReader(w, r.Body, limit)
	c := &call{a: a, w: w, r: r, rt: rt}
	if rt.access != accessAnyone {
		done, err := a.isSetupDone()
		if err != nil {
			a.writeError(w, r, err)
			return
		}
		if !done {
			a.writeError(w, r, errSetupRequired)
			return
		}
	}
	if rt.access >= accessUser {
		u, err := a.authenticate(r)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="fedgrid"`)
			a.writeError(w, r, err)
			return
		}
		c.user = u
		if c.who, err = a.svc.UserActor(u); err != nil {
			a.writeError(w, r, err)
			return
		}
		if rt.access == accessPerm {
			if err := a.st.Authorize(u.ID, rt.perm); err != nil {
				if errors.Is(err, store.ErrForbidden) {
					err = errorf(http.StatusForbidden, "forbidden", "your role lacks %s", rt.perm)
				}
				a.writeError(w, r, err)
				return
			}
		}
	}
	body, err := rt.handle(c)
	if err != nil {
		a.writeError(w, r, err)
		return
	}
	a.writeJSON(w, rt.status, body)
}

func (a *API) isSetupDone() (bool, error) {
	if a.setupDone.Load() {
		return true, nil
	}
	done, err := a.st.SetupDone()
	if err != nil {
		return false, err
	}
	if done {
		a.setupDone.Store(true)
	}
	return done, nil
}

func (a *API) authenticate(r *http.Request) (*store.User, error) {
	h := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return nil, errUnauthorized
	}
	u, err := a.st.Authenticate(strings.TrimSpace(tok))
	if errors.Is(err, store.ErrUnauthenticated) {
		return nil, errorf(http.StatusUnauthorized, "unauthorized", "token invalid, expired or revoked")
	}
	return u, err
}

func (a *API) writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	if status == http.StatusNoContent {
		w.WriteHeader(status)
		return
	}
	b, err := json.Marshal(v)
	if err != nil {
		a.log.Error("encode response", "err", err)
		status = http.StatusInternalServerError
		b = []byte(`{"error":{"code":"internal","message":"internal error"}}`)
	}
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}

func (a *API) writeError(w http.ResponseWriter, r *http.Request, err error) {
	he := toHTTP(err)
	if he.status >= 500 {
		a.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	} else {
		a.log.Debug("request refused", "method", r.Method, "path", r.URL.Path, "status", he.status, "code", he.code)
	}
	if he.status == http.StatusRequestEntityTooLarge {
		w.Header().Set("Connection", "close")
	}
	a.writeJSON(w, he.status, Error{Error: ErrorBody{Code: he.code, Message: he.message}})
}

// decode reads the request's JSON body into v strictly: one object, no
// unknown fields, no trailing data, within the size limit.
func (c *call) decode(v any) error {
	body, err := io.ReadAll(c.r.Body)
	if err != nil {
		return jsonDecodeError(err)
	}
	ct := c.r.Header.Get("Content-Type")
	if ct == "" && c.rt.optional && len(bytes.TrimSpace(body)) == 0 {
		return nil // no body where none is needed
	}
	// A body must say it is JSON: a cross-site form or no-cors fetch (which
	// needs no preflight) cannot send application/json.
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
		return errorf(http.StatusUnsupportedMediaType, "unsupported_media_type", "Content-Type must be application/json")
	}
	return decodeJSON(bytes.NewReader(body), v, c.rt.optional)
}

// decodeJSON reads a request body and decodes it with the strict decoder
// every JSON input goes through (package strictjson): one JSON object whose
// keys are exactly (case included) the json names of v's fields, each given
// once, at any depth, with values of the right types, and nothing after it.
func decodeJSON(r io.Reader, v any, optional bool) error {
	body, err := io.ReadAll(r)
	if err != nil {
		return jsonDecodeError(err)
	}
	if optional && len(bytes.TrimSpace(body)) == 0 {
		return nil
	}
	return jsonDecodeError(strictjson.Decode(body, v))
}

// can reports whether the caller's role grants p.
func (c *call) can(p store.Permission) (bool, error) {
	err := c.a.st.Authorize(c.user.ID, p)
	if errors.Is(err, store.ErrForbidden) {
		return false, nil
	}
	return err == nil, err
}

func (c *call) actor() string {
	if c.user == nil {
		return ""
	}
	return c.user.ID
}
