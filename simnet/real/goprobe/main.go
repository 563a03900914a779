// tlsprobe: one TLS connection made the way gorouter makes its backend connections, reported as
// JSON. It reads a request on stdin, dials the backend with a tls.Config shaped like gorouter's
// (proxy/utils/tls_config.go: ServerName = the route's server_cert_domain_san, RootCAs, the
// router.backends client certificate, CipherSuites; versions only if asked), reads the first line the
// backend sends, and classifies any error by the Go types gorouter's classifiers look at.
package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net"
	"os"
	"strings"
	"time"
)

type request struct {
	Address      string   `json:"address"`
	ServerName   string   `json:"server_name"`
	RootsPEM     string   `json:"roots_pem"`
	CertPEM      string   `json:"cert_pem"`
	KeyPEM       string   `json:"key_pem"`
	ALPN         []string `json:"alpn"`
	MinVersion   string   `json:"min_version"`
	MaxVersion   string   `json:"max_version"`
	CipherSuites []string `json:"cipher_suites"`
	TimeoutMS    int      `json:"timeout_ms"`
}

type response struct {
	OK           bool   `json:"ok"`
	Version      string `json:"version,omitempty"`
	ALPN         string `json:"alpn,omitempty"`
	Banner       string `json:"banner,omitempty"`
	Kind         string `json:"kind,omitempty"`
	Reason       string `json:"reason,omitempty"`
	Alert        string `json:"alert,omitempty"`
	Verification bool   `json:"verification_error"`
	Error        string `json:"error,omitempty"`
}

var versions = map[string]uint16{"TLSv1.2": tls.VersionTLS12, "TLSv1.3": tls.VersionTLS13}

func suites(names []string) ([]uint16, error) {
	var ids []uint16
	for _, n := range names {
		found := false
		for _, s := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
			if s.Name == n {
				ids, found = append(ids, s.ID), true
			}
		}
		if !found {
			return nil, errors.New("unknown cipher suite " + n)
		}
	}
	return ids, nil
}

func config(req request) (*tls.Config, error) {
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM([]byte(req.RootsPEM))
	cfg := &tls.Config{ServerName: req.ServerName, RootCAs: roots, NextProtos: req.ALPN}
	if req.CertPEM != "" {
		pair, err := tls.X509KeyPair([]byte(req.CertPEM), []byte(req.KeyPEM))
		if err != nil {
			return nil, err
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	if req.MinVersion != "" {
		cfg.MinVersion = versions[req.MinVersion]
	}
	if req.MaxVersion != "" {
		cfg.MaxVersion = versions[req.MaxVersion]
	}
	if len(req.CipherSuites) > 0 {
		ids, err := suites(req.CipherSuites)
		if err != nil {
			return nil, err
		}
		cfg.CipherSuites = ids
	}
	return cfg, nil
}

// classify names the error the way gorouter's proxy/fails classifiers see it.
func classify(err error, out *response) {
	out.Error = err.Error()
	var verr *tls.CertificateVerificationError
	out.Verification = errors.As(err, &verr)
	var hostname x509.HostnameError
	var authority x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	var record tls.RecordHeaderError
	var op *net.OpError
	switch {
	case errors.As(err, &hostname):
		out.Kind = "hostname"
	case errors.As(err, &authority):
		out.Kind = "unknown_authority"
	case errors.As(err, &invalid):
		out.Kind = "certificate_invalid"
		out.Reason = map[x509.InvalidReason]string{
			x509.Expired: "expired", x509.IncompatibleUsage: "incompatible_usage",
		}[invalid.Reason]
		if invalid.Reason == x509.Expired && strings.Contains(invalid.Detail, "before") {
			out.Reason = "not_yet_valid"
		}
	case errors.As(err, &record):
		out.Kind = "record_header"
	case errors.As(err, &op) && op.Op == "remote error":
		out.Kind = "remote_alert"
		out.Alert = strings.TrimPrefix(op.Err.Error(), "tls: ")
	default:
		out.Kind = "other"
	}
}

func main() {
	var req request
	out := response{}
	defer func() { json.NewEncoder(os.Stdout).Encode(out) }()
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		out.Kind, out.Error = "bad_request", err.Error()
		return
	}
	cfg, err := config(req)
	if err != nil {
		out.Kind, out.Error = "bad_request", err.Error()
		return
	}
	timeout := time.Duration(req.TimeoutMS) * time.Millisecond
	raw, err := net.DialTimeout("tcp", req.Address, timeout)
	if err != nil {
		out.Kind, out.Error = "dial", err.Error()
		return
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(timeout))
	conn := tls.Client(raw, cfg)
	if err := conn.Handshake(); err != nil {
		classify(err, &out)
		return
	}
	state := conn.ConnectionState()
	out.Version, out.ALPN = tls.VersionName(state.Version), state.NegotiatedProtocol
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		classify(err, &out)
		return
	}
	out.OK, out.Banner = true, line
}
