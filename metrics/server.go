package metrics

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// DefaultHost is the host a bare port listens on: metrics stay on the
// machine unless the operator names another address.
const DefaultHost = "127.0.0.1"

// ParseAddr returns the address to listen on for s, which -metrics gives:
// a bare port like 9477, or :9477, is DefaultHost's (127.0.0.1:9477); a
// host and port, like 0.0.0.0:9477, [::1]:9477 or localhost:9477, is
// taken as it is. The port is a number from 1 to 65535.
func ParseAddr(s string) (string, error) {
	host, port := DefaultHost, s
	if strings.Trim(s, "0123456789") != "" || s == "" {
		var err error
		if host, port, err = net.SplitHostPort(s); err != nil {
			return "", fmt.Errorf("expected a port like 9477, or a host and port like 127.0.0.1:9477 or [::1]:9477, got %q", s)
		}
		if host == "" {
			host = DefaultHost
		}
	}
	n, err := strconv.ParseUint(port, 10, 64)
	if err != nil || n == 0 || n > 65535 {
		return "", fmt.Errorf("expected a port number from 1 to 65535, got %q in %q", port, s)
	}
	return net.JoinHostPort(host, strconv.FormatUint(n, 10)), nil
}

// NewRegistry returns a registry of src's counters (NewCollector) and the
// process's own: the Go runtime's (go_*) and the process's CPU, memory
// and file descriptors (process_*).
func NewRegistry(src Source, opts Options) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(NewCollector(src, opts),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// maxScrapes is how many scrapes the endpoint serves at once; more are
// answered 503 at once. A scrape of a large table takes memory in
// proportion to it (docs/metrics.md): two allow a pair of Prometheus
// servers that scrape together.
const maxScrapes = 2

// NewHandler returns the endpoint: /metrics serves reg's metrics in the
// Prometheus exposition formats (and counts its own scrapes in reg, as
// promhttp_metric_handler_*), / is a page that links to /metrics, and any
// other path is not found. Errors gathering metrics are logged, and the
// metrics that could be gathered are served.
func NewHandler(reg *prometheus.Registry, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.InstrumentMetricHandler(reg, promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:            slog.NewLogLogger(log.Handler(), slog.LevelError),
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: maxScrapes,
	})))
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprint(w, `<!DOCTYPE html>
<html><head><title>vnic</title></head>
<body><h1>vnic</h1><p><a href="/metrics">Metrics</a></p></body></html>
`)
	})
	return mux
}

// Listen binds the endpoint's TCP address (as ParseAddr returns it).
func Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("cannot serve metrics: %w", err)
	}
	return ln, nil
}

// The endpoint's HTTP timeouts. A scrape sends no body, so reading a
// request takes no longer than its header; writing a large table's
// metrics may take long, and Prometheus gives up on its own
// (scrape_timeout).
const (
	readHeaderTimeout = 10 * time.Second
	idleTimeout       = 2 * time.Minute
	// shutdownTimeout is how long a scrape in progress may go on once
	// the daemon stops.
	shutdownTimeout = 5 * time.Second
)

// Serve serves h on ln until ctx ends, then waits for the scrapes in
// progress (shutdownTimeout at most) and returns. It closes ln.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, log *slog.Logger) error {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readHeaderTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil {
			srv.Close()
		}
	}()
	err := srv.Serve(ln)
	if errors.Is(err, http.ErrServerClosed) {
		<-stopped
		return nil
	}
	return fmt.Errorf("metrics endpoint on %s: %w", ln.Addr(), err)
}
