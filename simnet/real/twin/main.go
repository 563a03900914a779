// twin: the emulated twin's own processes, one binary with three modes (docs/emulate.md).
//
//	twin app    --config F --stats F   an app instance: serves with a service-time distribution
//	                                   and a worker count, answers with its identity
//	twin router --config F --stats F   a gorouter stand-in: routing-release's backend behaviour
//	                                   (TLS with the SAN check, retries, pruning, keep-alive pool,
//	                                   max_conns, timeouts) on Go's net/http and crypto/tls
//	twin load   --config F --out F [--start-at UNIX]
//	                                   the scenario's clients: open loop at intended Poisson times
//	                                   (latency from the intended time), closed-loop users
//
// app and router print "ready" once listening and write their stats file on SIGTERM; load
// writes every request it made when it ends. Each one-way hop delay is slept twice (there and
// back) with one sample, as the simulator charges it. Standard library only.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"math"
	"math/rand"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"
)

// ---------------------------------------------------------------------------- distributions

// Dist is a scenario latency or service-time distribution, as the schema dumps it.
type Dist struct {
	Dist     string  `json:"dist"`
	ValueMS  float64 `json:"value_ms"`
	MeanMS   float64 `json:"mean_ms"`
	MedianMS float64 `json:"median_ms"`
	Sigma    float64 `json:"sigma"`
	LowMS    float64 `json:"low_ms"`
	HighMS   float64 `json:"high_ms"`
}

// Source is a seeded random stream safe for concurrent use.
type Source struct {
	mu sync.Mutex
	r  *rand.Rand
}

func newSource(seed int64) *Source { return &Source{r: rand.New(rand.NewSource(seed))} }

func (s *Source) float() float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.r.Float64()
}

func (s *Source) exp() float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.r.ExpFloat64()
}

func (s *Source) normal() float64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.r.NormFloat64()
}

func (s *Source) intn(n int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.r.Intn(n)
}

// sample draws one value of d, in milliseconds.
func (s *Source) sample(d Dist) float64 {
	switch d.Dist {
	case "constant":
		return d.ValueMS
	case "exponential":
		return d.MeanMS * s.exp()
	case "lognormal":
		return d.MedianMS * math.Exp(d.Sigma*s.normal())
	case "uniform":
		return d.LowMS + (d.HighMS-d.LowMS)*s.float()
	}
	return 0
}

func ms(x float64) time.Duration { return time.Duration(x * float64(time.Millisecond)) }

func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// sleepMS sleeps x milliseconds. Below preciseMS it blocks its thread in nanosleep(2), which
// oversleeps by the kernel's timer slack (about 0.05 ms here); time.Sleep goes through Go's
// netpoller, whose epoll wait rounds a sub-millisecond sleep up to a whole millisecond -- eight
// such hops would add 5 ms to every request.
func sleepMS(x float64) {
	switch {
	case x <= 0:
	case x < preciseMS:
		ts := syscall.NsecToTimespec(int64(x * 1e6))
		for syscall.Nanosleep(&ts, &ts) == syscall.EINTR {
		}
	default:
		time.Sleep(ms(x))
	}
}

const preciseMS = 50

// ---------------------------------------------------------------------------- common

// extras is a latency spike's extra one-way delay per hop (ms), from the --extras file, which
// the emulation rewrites and signals with SIGUSR2 when a latency_spike starts or ends.
var (
	extrasPath string
	extrasMu   sync.RWMutex
	extras     = map[string]float64{}
)

func loadExtras() {
	if extrasPath == "" {
		return
	}
	next := map[string]float64{}
	if data, err := os.ReadFile(extrasPath); err == nil {
		json.Unmarshal(data, &next)
	}
	extrasMu.Lock()
	extras = next
	extrasMu.Unlock()
}

// extra is the spike's delay on hop now.
func extra(hop string) float64 {
	extrasMu.RLock()
	defer extrasMu.RUnlock()
	return extras[hop]
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "twin: "+format+"\n", args...)
	os.Exit(2)
}

func readJSON(path string, into any) {
	data, err := os.ReadFile(path)
	if err != nil {
		fail("%v", err)
	}
	if err := json.Unmarshal(data, into); err != nil {
		fail("%s: %v", path, err)
	}
}

func writeJSON(path string, value any) {
	data, err := json.Marshal(value)
	if err != nil {
		fail("%v", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		fail("%v", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		fail("%v", err)
	}
}

// onSignals runs stop on SIGTERM or SIGINT and exits; reload (if any) on SIGHUP, reset (if
// any) on SIGUSR1, the extras on SIGUSR2.
func onSignals(stop func(), reload func(), reset func()) {
	ch := make(chan os.Signal, 4)
	signal.Notify(ch, syscall.SIGTERM, syscall.SIGINT, syscall.SIGHUP, syscall.SIGUSR1,
		syscall.SIGUSR2)
	go func() {
		for sig := range ch {
			switch {
			case sig == syscall.SIGUSR2:
				loadExtras()
			case sig == syscall.SIGHUP && reload != nil:
				reload()
			case sig == syscall.SIGUSR1 && reset != nil:
				reset()
			case sig == syscall.SIGHUP || sig == syscall.SIGUSR1:
			default:
				stop()
				os.Exit(0)
			}
		}
	}()
}

// ---------------------------------------------------------------------------- app

type appConfig struct {
	Listen      []string `json:"listen"`
	App         string   `json:"app"`
	GUID        string   `json:"guid"`
	Concurrency int      `json:"concurrency"`
	QueueLimit  int      `json:"queue_limit"`
	Service     Dist     `json:"service"`
	Hop         Dist     `json:"hop"`
	Seed        int64    `json:"seed"`
}

// App serves `concurrency` requests at once; up to `queue_limit` more wait for a worker, and a
// request beyond that has its connection closed unanswered: what a full accept queue does to a
// connection, seen through the sidecar's tcp_proxy as the backend closing it.
type App struct {
	cfg     appConfig
	rng     *Source
	workers chan struct{}

	mu        sync.Mutex
	waiting   int
	served    int
	refused   int
	peakQueue int
	busyS     float64
	queueS    float64
}

func (a *App) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	arrived := time.Now()
	io.Copy(io.Discard, r.Body)
	hop := a.rng.sample(a.cfg.Hop) + extra("sidecar_to_app")
	sleepMS(hop)
	a.mu.Lock()
	if len(a.workers) >= a.cfg.Concurrency && a.waiting >= a.cfg.QueueLimit {
		a.refused++
		a.mu.Unlock()
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				return
			}
		}
		panic(http.ErrAbortHandler)
	}
	a.waiting++
	if a.waiting > a.peakQueue && len(a.workers) >= a.cfg.Concurrency {
		a.peakQueue = a.waiting
	}
	a.mu.Unlock()
	queued := time.Now()
	a.workers <- struct{}{}
	got := time.Now()
	service := a.rng.sample(a.cfg.Service)
	a.mu.Lock()
	a.waiting--
	a.queueS += got.Sub(queued).Seconds()
	a.mu.Unlock()
	sleepMS(service)
	<-a.workers
	a.mu.Lock()
	a.busyS += time.Since(got).Seconds()
	a.served++
	a.mu.Unlock()
	sleepMS(hop)
	// the app's whole time (hops, queue, service): what the sidecar's part is measured without
	w.Header().Set("X-Simnet-App-Ms", fmt.Sprintf("%.4f", msOf(time.Since(arrived))))
	w.Header().Set("X-Simnet-App", a.cfg.App)
	w.Header().Set("X-Simnet-Guid", a.cfg.GUID)
	w.Header().Set("Content-Type", "text/plain")
	fmt.Fprintf(w, "%s %s\n", a.cfg.App, a.cfg.GUID)
}

func (a *App) stats() map[string]any {
	a.mu.Lock()
	defer a.mu.Unlock()
	return map[string]any{"served": a.served, "refused": a.refused, "peak_queue": a.peakQueue,
		"busy_s": a.busyS, "queue_s": a.queueS}
}

func runApp(configPath, statsPath string) {
	var cfg appConfig
	readJSON(configPath, &cfg)
	if cfg.Concurrency < 1 {
		cfg.Concurrency = 1
	}
	app := &App{cfg: cfg, rng: newSource(cfg.Seed), workers: make(chan struct{}, cfg.Concurrency)}
	var listeners []net.Listener
	for _, addr := range cfg.Listen {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			fail("%v", err)
		}
		listeners = append(listeners, l)
	}
	onSignals(func() { writeJSON(statsPath, app.stats()) }, nil, nil)
	for _, l := range listeners {
		go (&http.Server{Handler: app, ErrorLog: quietLog()}).Serve(l)
	}
	fmt.Println("ready")
	select {}
}

// ---------------------------------------------------------------------------- router

type endpoint struct {
	Address string `json:"address"`
	GUID    string `json:"guid"`
	App     string `json:"app"`
	TLS     bool   `json:"tls"`
}

type routerConfig struct {
	Listen            string `json:"listen"`
	RoutesFile        string `json:"routes_file"`
	CAFile            string `json:"ca_file"`
	CertFile          string `json:"cert_file"`
	KeyFile           string `json:"key_file"`
	MaxAttempts       int    `json:"max_attempts"`
	KeepAlive         bool   `json:"keep_alive"`
	MaxIdlePerBackend int    `json:"max_idle_conns_per_backend"`
	MaxConns          int    `json:"max_conns"`
	DialTimeoutMS     int    `json:"dial_timeout_ms"`
	TLSTimeoutMS      int    `json:"tls_handshake_timeout_ms"`
	RequestTimeoutMS  int    `json:"request_timeout_ms"`
	Balancing         string `json:"balancing"`
	IngressToRouter   Dist   `json:"ingress_to_router"`
	RouterToSidecar   Dist   `json:"router_to_sidecar"`
	Seed              int64  `json:"seed"`
}

// verdict is gorouter's classification of one failed attempt (simnet.model.tls.Verdict): the
// status it answers, whether another endpoint is tried and whether the endpoint is pruned.
type verdict struct {
	name      string
	status    int
	cause     string
	retriable bool
	prunable  bool
}

var (
	dialFailed    = verdict{"dial_failed", 502, "dial failed", true, true}
	dialTimedOut  = verdict{"dial_timeout", 502, "router dial timeout", true, true}
	tlsTimedOut   = verdict{"handshake_timeout", 502, "router TLS handshake timeout", true, true}
	sanMismatch   = verdict{"san_mismatch", 503, "backend TLS (san_mismatch)", true, true}
	untrusted     = verdict{"untrusted_cert", 526, "backend TLS (untrusted_cert)", true, true}
	certRejected  = verdict{"client_cert_rejected", 496, "backend TLS (client_cert_rejected)", true, true}
	handshakeFail = verdict{"handshake_failure", 525, "backend TLS (handshake_failure)", true, true}
	// an alert gorouter does not classify: retried all the same, as any error before a
	// connection was obtained is (IncompleteRequestError), never pruned
	remoteError = verdict{"remote_error", 502, "backend TLS (remote_error)", true, false}
	// the backend closed the connection before answering (gorouter's IdempotentRequestEOF),
	// or reset it (ConnectionResetOnRead: failable, the endpoint marked failed)
	backendClosed   = verdict{"backend_closed", 502, "backend closed the connection", true, false}
	connReset       = verdict{"connection_reset", 502, "backend reset the connection", true, false}
	endpointTimeout = verdict{"endpoint_timeout", 502, "router endpoint timeout", false, false}
)

// dialError carries the verdict of a failed dial or handshake through http.Transport.
type dialError struct {
	v   verdict
	err error
}

func (e *dialError) Error() string { return e.v.name + ": " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

// handshakeVerdict classifies a handshake error by the Go types gorouter's classifiers test
// (proxy/fails/classifiers.go): HostnameError, UnknownAuthorityError, CertificateInvalidError,
// a remote alert, a record that is not TLS.
func handshakeVerdict(err error) verdict {
	var hostname x509.HostnameError
	var authority x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	var record tls.RecordHeaderError
	var op *net.OpError
	switch {
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		return tlsTimedOut
	case errors.As(err, &hostname):
		return sanMismatch
	case errors.As(err, &authority), errors.As(err, &invalid):
		return untrusted
	case errors.As(err, &record):
		return handshakeFail
	case errors.As(err, &op) && op.Op == "remote error":
		alert := strings.TrimPrefix(op.Err.Error(), "tls: ")
		switch alert {
		case "bad certificate", "unknown certificate authority", "certificate required":
			return certRejected
		case "handshake failure":
			return handshakeFail
		}
		return remoteError
	}
	return dialFailed // the connection closed during the handshake
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// backend is one endpoint's transport (gorouter keeps a round tripper per endpoint) and the
// requests in progress on it (gorouter's NumberConnections, which max_conns counts).
type backend struct {
	transport *http.Transport
	active    int
}

type routerStats struct {
	Handled           int            `json:"handled"`
	Retries           int            `json:"retries"`
	EndpointsPruned   int            `json:"endpoints_pruned"`
	ConnectionsOpened int            `json:"connections_opened"`
	TLSHandshakes     int            `json:"tls_handshakes"`
	Reloads           int            `json:"reloads"`
	Causes            map[string]int `json:"causes"`   // of the answers that failed
	Failures          map[string]int `json:"failures"` // every failed attempt, by verdict
	Outcomes          map[string]int `json:"outcomes"`
	Warmup            *routerStats   `json:"warmup,omitempty"` // the counters reset at time 0
}

type Router struct {
	cfg     routerConfig
	rng     *Source
	roots   *x509.CertPool
	certs   []tls.Certificate
	mu      sync.Mutex
	table   map[string][]endpoint
	rr      map[string]int
	backend map[endpoint]*backend
	failed  map[endpoint]time.Time // marked failed, skipped by round-robin for retryAfterFailure
	stats   routerStats
}

// retryAfterFailure: how long round-robin skips an endpoint marked failed, gorouter's
// droplet_stale_threshold (120 s) / 4 (registry/registry.go, route/roundrobin.go).
const retryAfterFailure = 30 * time.Second

func (r *Router) load() {
	var table map[string][]endpoint
	readJSON(r.cfg.RoutesFile, &table)
	r.mu.Lock()
	r.table = table
	r.stats.Reloads++
	r.mu.Unlock()
}

func (r *Router) count(f func(s *routerStats)) {
	r.mu.Lock()
	f(&r.stats)
	r.mu.Unlock()
}

func (r *Router) transport(ep endpoint) *http.Transport {
	dialTimeout := time.Duration(r.cfg.DialTimeoutMS) * time.Millisecond
	tlsTimeout := time.Duration(r.cfg.TLSTimeoutMS) * time.Millisecond
	dial := func(ctx context.Context) (net.Conn, error) {
		d := net.Dialer{Timeout: dialTimeout}
		conn, err := d.DialContext(ctx, "tcp", ep.Address)
		if err != nil {
			if isTimeout(err) {
				return nil, &dialError{dialTimedOut, err}
			}
			return nil, &dialError{dialFailed, err}
		}
		r.count(func(s *routerStats) { s.ConnectionsOpened++ })
		return conn, nil
	}
	t := &http.Transport{
		DisableKeepAlives:   !r.cfg.KeepAlive,
		MaxIdleConnsPerHost: r.cfg.MaxIdlePerBackend,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dial(ctx)
		},
	}
	if ep.TLS {
		t.DialTLSContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			raw, err := dial(ctx)
			if err != nil {
				return nil, err
			}
			r.count(func(s *routerStats) { s.TLSHandshakes++ })
			conn := tls.Client(raw, &tls.Config{ServerName: ep.GUID, RootCAs: r.roots,
				Certificates: r.certs, NextProtos: []string{"http/1.1"}})
			hctx, cancel := context.WithTimeout(ctx, tlsTimeout)
			defer cancel()
			if err := conn.HandshakeContext(hctx); err != nil {
				raw.Close()
				return nil, &dialError{handshakeVerdict(err), err}
			}
			return conn, nil
		}
	}
	return t
}

// choose picks an endpoint by the balancing rule among those not tried and below max_conns;
// nil when every endpoint is at max_conns (503 Connection Limit Reached). Round-robin is
// gorouter's: the pool's turn starts at a random index and is taken once per request (route/
// pool.go NextIndex), a retry goes on from the request's own place, `pos` (route/roundrobin.go).
func (r *Router) choose(host string, endpoints []endpoint, tried map[endpoint]bool, pos *int) (endpoint, *backend, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	open := func(e endpoint) bool {
		return r.cfg.MaxConns == 0 || r.backendOf(e).active < r.cfg.MaxConns
	}
	active := func(e endpoint) int { return r.backendOf(e).active }
	var ep endpoint
	found := false
	if r.cfg.Balancing == "least-connection" {
		for _, e := range endpoints {
			if !tried[e] && open(e) && (!found || active(e) < active(ep)) {
				ep, found = e, true
			}
		}
	} else {
		start := *pos
		if len(tried) == 0 {
			i, ok := r.rr[host]
			if !ok {
				i = r.rng.intn(len(endpoints))
			}
			r.rr[host] = i + 1
			start = i
		}
		// the first endpoint not tried, below max_conns and not marked failed; when every
		// one is marked, the marks are cleared (route/roundrobin.go next)
		for clear := 0; clear < 2 && !found; clear++ {
			if clear == 1 {
				for _, e := range endpoints {
					delete(r.failed, e)
				}
			}
			for k := 0; k < len(endpoints) && !found; k++ {
				e := endpoints[(start+k)%len(endpoints)]
				if at, marked := r.failed[e]; !tried[e] && open(e) &&
					(!marked || time.Since(at) > retryAfterFailure) {
					ep, found, *pos = e, true, start+k+1
				}
			}
		}
	}
	if !found {
		return endpoint{}, nil, false
	}
	b := r.backendOf(ep)
	b.active++
	return ep, b, true
}

// allTried: whether the request has tried every endpoint of the pool; gorouter then stops
// rather than try one again (proxy/round_tripper/proxy_round_tripper.go: past NumEndpoints
// attempts, a pick already in triedEndpoints breaks the loop).
func allTried(endpoints []endpoint, tried map[endpoint]bool) bool {
	for _, e := range endpoints {
		if !tried[e] {
			return false
		}
	}
	return true
}

func (r *Router) backendOf(e endpoint) *backend {
	b, ok := r.backend[e]
	if !ok {
		b = &backend{transport: r.transport(e)}
		r.backend[e] = b
	}
	return b
}

func (r *Router) release(b *backend) {
	r.mu.Lock()
	b.active--
	r.mu.Unlock()
}

func (r *Router) prune(host string, ep endpoint) {
	r.mu.Lock()
	defer r.mu.Unlock()
	kept := r.table[host][:0:0]
	for _, e := range r.table[host] {
		if e != ep {
			kept = append(kept, e)
		}
	}
	if len(kept) < len(r.table[host]) {
		r.table[host] = kept
		r.stats.EndpointsPruned++
	}
}

func (r *Router) endpoints(host string) ([]endpoint, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	eps, ok := r.table[host]
	return append([]endpoint(nil), eps...), ok
}

// timing is one request's time in the router: what it slept (the scenario's hop delays) and
// the successful attempt's round trip to the backend, so the router's own processing can be
// told apart (“simnet calibrate hops“).
type timing struct {
	slept, backend time.Duration
}

func (t *timing) sleep(x float64) {
	start := time.Now()
	sleepMS(x)
	t.slept += time.Since(start)
}

func (r *Router) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	start := time.Now()
	body, _ := io.ReadAll(req.Body)
	var t timing
	in := r.rng.sample(r.cfg.IngressToRouter)
	t.sleep(in)
	status, cause, resp := r.route(req, body, &t)
	t.sleep(in)
	// the router's time without its own sleeps, and the backend's part of it
	w.Header().Set("X-Simnet-Router-Ms", fmt.Sprintf("%.4f", msOf(time.Since(start)-t.slept)))
	w.Header().Set("X-Simnet-Backend-Ms", fmt.Sprintf("%.4f", msOf(t.backend)))
	w.Header().Set("X-Simnet-Router-Slept-Ms", fmt.Sprintf("%.4f", msOf(t.slept)))
	r.count(func(s *routerStats) {
		s.Handled++
		s.Outcomes[fmt.Sprint(status)]++
		if cause != "" {
			s.Causes[cause]++
		}
	})
	if resp != nil {
		for _, k := range []string{"X-Simnet-App", "X-Simnet-Guid", "X-Simnet-App-Ms", "Content-Type"} {
			if v := resp.Header.Get(k); v != "" {
				w.Header().Set(k, v)
			}
		}
		w.WriteHeader(resp.StatusCode)
		w.Write(resp.body)
		return
	}
	w.Header().Set("X-Simnet-Cause", cause)
	w.WriteHeader(status)
	fmt.Fprintln(w, cause)
}

type answer struct {
	*http.Response
	body []byte
}

// route is gorouter's proxy round trip: up to max_attempts endpoints, the retriable errors
// retried on one not yet tried, prunable ones removed from the pool.
func (r *Router) route(req *http.Request, body []byte, t *timing) (int, string, *answer) {
	host := req.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	endpoints, known := r.endpoints(host)
	if !known {
		return 404, "unknown route", nil
	}
	status, cause := 503, "no endpoints"
	tried := map[endpoint]bool{}
	pos := 0
	for attempt := 0; attempt < r.cfg.MaxAttempts; attempt++ {
		if attempt > 0 {
			endpoints, _ = r.endpoints(host)
			if allTried(endpoints, tried) && len(endpoints) > 0 {
				return status, cause, nil
			}
			r.count(func(s *routerStats) { s.Retries++ })
		}
		if len(endpoints) == 0 {
			return status, cause, nil
		}
		ep, b, ok := r.choose(host, endpoints, tried, &pos)
		if !ok {
			return 503, "connection limit reached", nil
		}
		out := r.rng.sample(r.cfg.RouterToSidecar) + extra("router_to_sidecar")
		t.sleep(out)
		sent := time.Now()
		resp, err := r.attempt(b, ep, req, body)
		r.release(b)
		if err == nil {
			t.backend = time.Since(sent)
			t.sleep(out)
			return resp.StatusCode, "", resp
		}
		v := classify(err)
		status, cause = v.status, v.cause
		r.count(func(s *routerStats) { s.Failures[v.name]++ })
		if v.prunable && ep.TLS {
			r.prune(host, ep)
		} else if v.prunable || v.name == connReset.name { // FailableClassifiers
			r.mu.Lock()
			r.failed[ep] = time.Now()
			r.mu.Unlock()
		}
		if !v.retriable {
			return status, cause, nil
		}
		tried[ep] = true
	}
	return status, cause, nil
}

func (r *Router) attempt(b *backend, ep endpoint, req *http.Request, body []byte) (*answer, error) {
	ctx, cancel := context.WithTimeout(req.Context(),
		time.Duration(r.cfg.RequestTimeoutMS)*time.Millisecond)
	defer cancel()
	scheme := "http"
	if ep.TLS {
		scheme = "https"
	}
	out, err := http.NewRequestWithContext(ctx, req.Method, scheme+"://"+ep.Address+req.URL.RequestURI(),
		strings.NewReader(string(body)))
	if err != nil {
		return nil, err
	}
	out.Host = req.Host
	for _, k := range []string{"Content-Type", "User-Agent"} {
		if v := req.Header.Get(k); v != "" {
			out.Header.Set(k, v)
		}
	}
	resp, err := b.transport.RoundTrip(out)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	return &answer{resp, data}, nil
}

// classify names an attempt's error as gorouter does: the dial's and handshake's own verdicts;
// a TLS alert whenever it arrives (gorouter's classifiers test the error chain, and under TLS 1.3
// Envoy's "certificate required" comes after the client's handshake, on the first read); the
// endpoint timeout; anything else is the backend closing the connection unanswered.
func classify(err error) verdict {
	var de *dialError
	var op *net.OpError
	if errors.As(err, &de) {
		return de.v
	}
	if errors.As(err, &op) && op.Op == "remote error" {
		return handshakeVerdict(err)
	}
	if errors.Is(err, context.DeadlineExceeded) || isTimeout(err) {
		return endpointTimeout
	}
	if errors.Is(err, syscall.ECONNRESET) {
		return connReset
	}
	return backendClosed
}

// reset starts the run at time 0, after the load generator's warm-up: the counters zeroed;
// the pools are those the warm-up's ramp built.
func (r *Router) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	warmup := r.stats
	r.stats = routerStats{Reloads: r.stats.Reloads, Causes: map[string]int{},
		Failures: map[string]int{}, Outcomes: map[string]int{}, Warmup: &warmup}
}

func (r *Router) snapshot() routerStats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stats
}

func runRouter(configPath, statsPath string) {
	var cfg routerConfig
	readJSON(configPath, &cfg)
	if cfg.MaxAttempts < 1 {
		cfg.MaxAttempts = 1
	}
	r := &Router{cfg: cfg, rng: newSource(cfg.Seed), rr: map[string]int{},
		backend: map[endpoint]*backend{}, failed: map[endpoint]time.Time{},
		stats: routerStats{Causes: map[string]int{}, Failures: map[string]int{},
			Outcomes: map[string]int{}}}
	r.roots = x509.NewCertPool()
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil || !r.roots.AppendCertsFromPEM(pem) {
			fail("no CA certificate in %s", cfg.CAFile)
		}
	}
	if cfg.CertFile != "" {
		pair, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			fail("%v", err)
		}
		r.certs = []tls.Certificate{pair}
	}
	r.load()
	l, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		fail("%v", err)
	}
	onSignals(func() { writeJSON(statsPath, r.snapshot()) }, r.load, r.reset)
	go (&http.Server{Handler: r, ErrorLog: quietLog()}).Serve(l)
	fmt.Println("ready")
	select {}
}

// ---------------------------------------------------------------------------- load

type clientConfig struct {
	Name            string   `json:"name"`
	Host            string   `json:"host"`
	Model           string   `json:"model"`
	RatePerS        float64  `json:"rate_per_s"`
	Users           int      `json:"users"`
	ThinkTime       Dist     `json:"think_time"`
	KeepAlive       bool     `json:"keep_alive"`
	TimeoutS        *float64 `json:"timeout_s"`
	StartS          float64  `json:"start_s"`
	DurationS       *float64 `json:"duration_s"`
	ClientToIngress Dist     `json:"client_to_ingress"`
}

type loadConfig struct {
	Target    string         `json:"target"`
	DurationS float64        `json:"duration_s"`
	Seed      int64          `json:"seed"`
	Clients   []clientConfig `json:"clients"`
}

// record: client, intended_s, lag_ms, latency_ms, status, error, app, guid, cause, router_ms,
// backend_ms, app_ms, slept_ms, router_slept_ms (simnet.emulate.observed reads these by
// position): the router's own time without its sleeps and its backend's round trip, the app's
// whole time, what the generator slept of the client's hop, what the router slept of its hops
// (-1 where nobody answered)
type record [14]any

type Load struct {
	cfg     loadConfig
	t0      time.Time
	warmup  float64 // seconds before t0 that clients starting at 0 already send, unrecorded
	mu      sync.Mutex
	records []record
	lags    []float64
	wg      sync.WaitGroup
}

func errorClass(err error) string {
	switch {
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "reset"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return "eof"
	}
	return "other"
}

// request makes one request intended at `intended` (seconds from t0) and records it; its
// latency runs from the intended time, so a late send is charged to the platform's answer.
func (l *Load) request(n int, c *clientConfig, client *http.Client, rng *Source, intended float64) {
	start := time.Now()
	lag := start.Sub(l.t0).Seconds() - intended
	hop := rng.sample(c.ClientToIngress) + extra("client_to_ingress")
	slept := time.Now()
	sleepMS(hop)
	sleptFor := time.Since(slept)
	ctx := context.Background()
	var cancel context.CancelFunc = func() {}
	if c.TimeoutS != nil {
		deadline := l.t0.Add(time.Duration((intended + *c.TimeoutS) * float64(time.Second)))
		ctx, cancel = context.WithDeadline(ctx, deadline)
	}
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+l.cfg.Target+"/", nil)
	req.Host = c.Host
	status, class, app, guid, cause := 0, "", "", "", ""
	routerMS, backendMS, appMS, routerSlept := -1.0, -1.0, -1.0, -1.0
	resp, err := client.Do(req)
	if err == nil {
		fmt.Sscan(resp.Header.Get("X-Simnet-Router-Slept-Ms"), &routerSlept)
		fmt.Sscan(resp.Header.Get("X-Simnet-App-Ms"), &appMS)
		fmt.Sscan(resp.Header.Get("X-Simnet-Router-Ms"), &routerMS)
		fmt.Sscan(resp.Header.Get("X-Simnet-Backend-Ms"), &backendMS)
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		status = resp.StatusCode
		app, guid = resp.Header.Get("X-Simnet-App"), resp.Header.Get("X-Simnet-Guid")
		cause = resp.Header.Get("X-Simnet-Cause")
		if err != nil {
			status, class = 0, errorClass(err)
		}
		if err == nil && status != 200 && cause == "" {
			// an answer no router wrote: the load balancer's own (Envoy marks a circuit
			// breaker's 503 with x-envoy-overloaded)
			cause = fmt.Sprintf("load balancer answered %d", status)
			if resp.Header.Get("X-Envoy-Overloaded") != "" {
				cause = "load balancer connection limit"
			}
		}
	} else {
		class = errorClass(err)
	}
	if status != 0 || class != "timeout" {
		back := time.Now()
		sleepMS(hop)
		sleptFor += time.Since(back)
	}
	latency := time.Since(l.t0).Seconds() - intended
	if class == "timeout" && c.TimeoutS != nil {
		latency = *c.TimeoutS
	}
	if intended < 0 {
		return // the warm-up
	}
	l.mu.Lock()
	l.records = append(l.records, record{n, intended, lag * 1000, latency * 1000, status, class,
		app, guid, cause, routerMS, backendMS, appMS, msOf(sleptFor), routerSlept})
	l.lags = append(l.lags, lag*1000)
	l.mu.Unlock()
}

func (l *Load) httpClient(c *clientConfig, conns int) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DisableKeepAlives:   !c.KeepAlive,
		MaxIdleConnsPerHost: conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func (l *Load) end(c *clientConfig) float64 {
	end := l.cfg.DurationS
	if c.DurationS != nil && c.StartS+*c.DurationS < end {
		end = c.StartS + *c.DurationS
	}
	return end
}

// begin is when a client starts sending: its start, or the warm-up's for one starting at 0.
func (l *Load) begin(c *clientConfig) float64 {
	if c.StartS == 0 {
		return -l.warmup
	}
	return c.StartS
}

// ramp is the share of a client's load sent at time t: during the warm-up it grows from 0 to
// the whole, so the routers' pools and the sidecars' connections grow as the load does, as in
// a foundation already serving, with no burst of handshakes at once (which two cores
// serialize: the stall then holds more requests, and so more connections, than the load
// itself would).
func (l *Load) ramp(t float64) float64 {
	if t >= 0 || l.warmup <= 0 {
		return 1
	}
	return (t + l.warmup) / l.warmup
}

func (l *Load) sleepUntil(s float64) {
	if d := time.Until(l.t0.Add(time.Duration(s * float64(time.Second)))); d > 0 {
		time.Sleep(d)
	}
}

// open sends at Poisson times whatever the answers do (no coordinated omission).
func (l *Load) open(n int, c *clientConfig) {
	defer l.wg.Done()
	rng := newSource(l.cfg.Seed + int64(n)*7919)
	client := l.httpClient(c, 4096)
	t, end := l.begin(c), l.end(c)
	for {
		t += rng.exp() / c.RatePerS
		if t >= end {
			return
		}
		if t < 0 && rng.float() >= l.ramp(t) { // thinning: Poisson at the ramped rate
			continue
		}
		l.sleepUntil(t)
		l.wg.Add(1)
		go func(intended float64) {
			defer l.wg.Done()
			l.request(n, c, client, rng, intended)
		}(t)
	}
}

// closed runs `users` users, each waiting for its answer, then thinking.
func (l *Load) closed(n int, c *clientConfig) {
	defer l.wg.Done()
	end := l.end(c)
	for u := 0; u < c.Users; u++ {
		l.wg.Add(1)
		go func(u int) {
			defer l.wg.Done()
			rng := newSource(l.cfg.Seed + int64(n)*7919 + int64(u+1)*104729)
			client := l.httpClient(c, 1)
			begin := l.begin(c)
			if begin < 0 { // the users join one after another over the warm-up
				begin += l.warmup * float64(u) / float64(c.Users)
			}
			l.sleepUntil(begin)
			for {
				now := time.Since(l.t0).Seconds()
				if now >= end {
					return
				}
				l.request(n, c, client, rng, now)
				sleepMS(rng.sample(c.ThinkTime))
			}
		}(u)
	}
}

func percentile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	return s[int(math.Min(float64(len(s)-1), math.Floor(q*float64(len(s)))))]
}

func (l *Load) result() map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	sort.Slice(l.records, func(i, j int) bool { return l.records[i][1].(float64) < l.records[j][1].(float64) })
	return map[string]any{
		"started_unix": float64(l.t0.UnixNano()) / 1e9,
		"requests":     l.records,
		"send_lag_ms": map[string]float64{"p50": percentile(l.lags, 0.5),
			"p99": percentile(l.lags, 0.99), "max": percentile(l.lags, 1)},
		"offered": len(l.records),
	}
}

func runLoad(configPath, outPath string, startAt float64, warmup, drain time.Duration) {
	var cfg loadConfig
	readJSON(configPath, &cfg)
	l := &Load{cfg: cfg, t0: time.Now()}
	if startAt > 0 {
		l.t0 = time.Unix(0, int64(startAt*1e9))
	}
	onSignals(func() { writeJSON(outPath, l.result()) }, nil, nil)
	l.warmup = warmup.Seconds()
	time.Sleep(time.Until(l.t0) - warmup)
	for n := range cfg.Clients {
		c := &cfg.Clients[n]
		l.wg.Add(1)
		if c.Model == "open" {
			go l.open(n, c)
		} else {
			go l.closed(n, c)
		}
	}
	done := make(chan struct{})
	go func() { l.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(time.Until(l.t0.Add(time.Duration(cfg.DurationS*float64(time.Second)) + drain))):
		fmt.Fprintln(os.Stderr, "twin: requests still in flight after the drain; not recorded")
	}
	writeJSON(outPath, l.result())
}

// ---------------------------------------------------------------------------- main

// quietLog drops net/http's own error log (a closed connection is an outcome, not news).
func quietLog() *log.Logger { return log.New(io.Discard, "", 0) }

func main() {
	if len(os.Args) < 2 {
		fail("usage: twin app|router|load --config F ...")
	}
	mode := os.Args[1]
	fs := flag.NewFlagSet(mode, flag.ExitOnError)
	configPath := fs.String("config", "", "the JSON config")
	stats := fs.String("stats", "", "where app and router write their stats on SIGTERM")
	out := fs.String("out", "", "where load writes its requests")
	startAt := fs.Float64("start-at", 0, "load: the run's time 0, as a Unix time")
	drain := fs.Float64("drain-s", 30, "load: how long in-flight requests may outlive the run")
	warmup := fs.Float64("warmup-s", 0, "load: seconds of the clients' load before time 0, not recorded")
	fs.StringVar(&extrasPath, "extras", "", "a latency spike's extra delay per hop, re-read on SIGUSR2")
	fs.Parse(os.Args[2:])
	if *configPath == "" {
		fail("--config is required")
	}
	loadExtras()
	switch mode {
	case "app":
		runApp(*configPath, *stats)
	case "router":
		runRouter(*configPath, *stats)
	case "load":
		runLoad(*configPath, *out, *startAt, time.Duration(*warmup*float64(time.Second)),
			time.Duration(*drain*float64(time.Second)))
	default:
		fail("unknown mode %s: choose from app, router, load", mode)
	}
}
