package httpapi

import (
	"bytes"
	_ "embed"
	"net/http"
	"strconv"
)

// openAPIDocument is the OpenAPI 3.1 document of every route, maintained
// by hand next to the handlers; cmd/nself-audit's TestOpenAPI keeps it true.
//
//go:embed openapi.json
var openAPIDocument []byte

// OpenAPIDocument returns a copy of the OpenAPI document that GET
// /openapi.json serves.
func OpenAPIDocument() []byte { return bytes.Clone(openAPIDocument) }

// handleOpenAPI serves the OpenAPI document. It needs no credentials: the
// document is the public contract, the same in every installation, and
// holds nothing about accounts or configuration.
func (s *Server) handleOpenAPI(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Content-Length", strconv.Itoa(len(openAPIDocument)))
	w.Write(openAPIDocument)
}
