// Package migrations embeds the PostgreSQL migrations. nSelf expects them as
// migrations/*.sql at the plugin root; this file only makes them part of the
// binary. Files are applied in byte order of their names, each once.
package migrations

import "embed"

// FS holds every *.sql file of this folder.
//
//go:embed *.sql
var FS embed.FS
