//go:build pprof

package main

// Built only with -tags pprof: serves net/http/pprof on
// NSELF_AUDIT_PPROF_ADDR (default 127.0.0.1:6060) for profiling the
// service under load. Never part of a release build.

import (
	"net/http"
	_ "net/http/pprof"
	"os"
)

func init() {
	addr := os.Getenv("NSELF_AUDIT_PPROF_ADDR")
	if addr == "" {
		addr = "127.0.0.1:6060"
	}
	go http.ListenAndServe(addr, nil)
}
