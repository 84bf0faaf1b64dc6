// Package web holds the audit viewer: a page and its assets (plain HTML,
// CSS and JavaScript, no build step), embedded in the binary. They hold no
// data: the page asks the API for everything, with the token the operator
// signs in with. internal/httpapi serves them.
package web

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"path"
)

//go:embed index.html app.js app.css icon.svg
var files embed.FS

// File is one embedded file, ready to serve.
type File struct {
	Name        string
	Body        []byte
	ContentType string
	ETag        string // a strong validator: a digest of Body
}

var contentTypes = map[string]string{
	".html": "text/html; charset=utf-8",
	".js":   "text/javascript; charset=utf-8",
	".css":  "text/css; charset=utf-8",
	".svg":  "image/svg+xml",
}

var byName = func() map[string]*File {
	m := map[string]*File{}
	entries, err := files.ReadDir(".")
	if err != nil {
		panic(err)
	}
	for _, e := range entries {
		body, err := files.ReadFile(e.Name())
		if err != nil {
			panic(err)
		}
		ct, ok := contentTypes[path.Ext(e.Name())]
		if !ok {
			panic("web: no content type for " + e.Name())
		}
		sum := sha256.Sum256(body)
		m[e.Name()] = &File{Name: e.Name(), Body: body, ContentType: ct, ETag: `"` + hex.EncodeToString(sum[:16]) + `"`}
	}
	return m
}()

// Page is the viewer's page, served at GET /.
func Page() *File { return byName["index.html"] }

// Asset returns the asset the page loads as ui/<name> (app.js, app.css,
// icon.svg); ok is false for any other name, the page itself included.
func Asset(name string) (f *File, ok bool) {
	if name == "index.html" {
		return nil, false
	}
	f, ok = byName[name]
	return f, ok
}

// Assets lists the names Asset serves.
func Assets() []string {
	var names []string
	for name := range byName {
		if name != "index.html" {
			names = append(names, name)
		}
	}
	return names
}

// ContentSecurityPolicy is the policy of every viewer response: only this
// origin's own script, style, images and API calls; no inline script or
// style, no plugins, no framing, no form posts, no <base>.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; " +
	"img-src 'self'; manifest-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
