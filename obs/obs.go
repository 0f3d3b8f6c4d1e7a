// Package obs is what every fedgrid peer shares for observability: a
// Prometheus registry with the build info and the Go and process
// collectors, HTTP request histograms by route and status, and a small
// /metrics server for peers without an HTTP API of their own (nodes).
package obs

import (
	"errors"
	"net"
	"net/http"
	"runtime"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Namespace prefixes every fedgrid series.
const Namespace = "fedgrid"

// NewRegistry returns a registry with fedgrid_build_info{version, goversion,
// role} (always 1) and the Go and process collectors.
func NewRegistry(role, version string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	bi := prometheus.NewGauge(prometheus.GaugeOpts{
		Namespace: Namespace, Name: "build_info",
		Help:        "Always 1; the labels say which fedgrid runs: its version, Go version and peer role.",
		ConstLabels: prometheus.Labels{"version": version, "goversion": runtime.Version(), "role": role},
	})
	bi.Set(1)
	reg.MustRegister(bi, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Handler serves reg as Prometheus text.
func Handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}

// HTTPMetrics measures the requests of an http.Handler:
// fedgrid_http_request_duration_seconds{route, status}.
type HTTPMetrics struct {
	hist *prometheus.HistogramVec
}

// NewHTTPMetrics registers the histogram in reg.
func NewHTTPMetrics(reg prometheus.Registerer) *HTTPMetrics {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: Namespace, Name: "http_request_duration_seconds",
		Help:    "HTTP requests by route (method and pattern) and status code, and how long each took.",
		Buckets: []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
	}, []string{"route", "status"})
	reg.MustRegister(h)
	return &HTTPMetrics{hist: h}
}

// Wrap measures every request next serves. The route is the method and
// the pattern of the (innermost) http.ServeMux that matched it, e.g.
// "GET /api/v1/users/{id}"; "other" when none did, so that paths a client
// makes up never become labels.
func (m *HTTPMetrics) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, r)
		route := "other"
		if r.Pattern != "" {
			route = r.Pattern
			if !hasMethod(route) {
				route = r.Method + " " + route
			}
		}
		m.hist.WithLabelValues(route, strconv.Itoa(sw.status)).Observe(time.Since(start).Seconds())
	})
}

func hasMethod(pattern string) bool {
	for i := 0; i < len(pattern); i++ {
		switch pattern[i] {
		case ' ':
			return true
		case '/':
			return false
		}
	}
	return false
}

type statusWriter struct {
	http.ResponseWriter
	status  int
	written bool
}

func (s *statusWriter) WriteHeader(code int) {
	if !s.written {
		s.status, s.written = code, true
	}
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusWriter) Write(b []byte) (int, error) {
	s.written = true
	return s.ResponseWriter.Write(b)
}

// Flush passes flushes on (streamed answers).
func (s *statusWriter) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (s *statusWriter) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// Server serves GET /metrics (and GET /healthz) on its own address.
type Server struct {
	ln   net.Listener
	srv  *http.Server
	done chan error
}

// Serve listens on addr (host:port; port 0 picks one) and serves reg
// until Close.
func Serve(addr string, reg *prometheus.Registry) (*Server, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", Handler(reg))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	hm := NewHTTPMetrics(reg)
	s := &Server{ln: ln, done: make(chan error, 1),
		srv: &http.Server{Handler: hm.Wrap(mux), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second,
			WriteTimeout: 30 * time.Second, MaxHeaderBytes: 16 << 10}}
	go func() { // owned by Close
		err := s.srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		s.done <- err
	}()
	return s, nil
}

// URL is the server's http:// base URL.
func (s *Server) URL() string { return "http://" + s.ln.Addr().String() }

// Close stops the server and waits for it.
func (s *Server) Close() error {
	err := s.srv.Close()
	return errors.Join(err, <-s.done)
}
