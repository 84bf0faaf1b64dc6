package httpapi

import (
	"bytes"
	"net/http"
	"strings"
	"time"

	"github.com/nself-org/nself-audit/internal/audit"
	"github.com/nself-org/nself-audit/internal/web"
)

// The audit viewer (internal/web): its page at GET / and its assets at
// GET /ui/{file}. They need no credentials, as they hold no data: the page
// signs in with a token the operator gives it and sends that token with
// each API call. Only these exact paths are open; any other file under
// /ui/ answers as an unknown route does, 401 without credentials and 404
// with them.

func (s *Server) handleViewerPage(w http.ResponseWriter, r *http.Request) {
	serveViewerFile(w, r, web.Page())
}

func (s *Server) handleViewerAsset(w http.ResponseWriter, r *http.Request) {
	f, ok := web.Asset(r.PathValue("file"))
	if !ok {
		s.authenticated(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.writeError(w, r, audit.Errorf(audit.ENOTFOUND, "no route %s %s", r.Method, r.URL.Path))
		})).ServeHTTP(w, r)
		return
	}
	serveViewerFile(w, r, f)
}

// isViewerPath tells whether path is one of the viewer's open paths.
func isViewerPath(path string) bool {
	if path == "/" {
		return true
	}
	name, ok := strings.CutPrefix(path, "/ui/")
	if !ok {
		return false
	}
	_, ok = web.Asset(name)
	return ok
}

// serveViewerFile writes f with the viewer's security headers. The files
// change only with the binary: caches revalidate them by ETag.
func serveViewerFile(w http.ResponseWriter, r *http.Request, f *web.File) {
	h := w.Header()
	h.Set("Content-Type", f.ContentType)
	h.Set("Content-Security-Policy", web.ContentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	h.Set("Cache-Control", "no-cache")
	h.Set("ETag", f.ETag)
	http.ServeContent(w, r, f.Name, time.Time{}, bytes.NewReader(f.Body))
}
