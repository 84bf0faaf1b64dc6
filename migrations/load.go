package migrations

import (
	"crypto/sha256"
	"encoding/hex"
	"io/fs"
	"sort"
	"strings"
)

// Migration is one migration file.
type Migration struct {
	Filename string
	SQL      string
	Checksum string // sha256 hex of the file's bytes
}

// Load returns the *.sql files at the top of fsys in the order they apply,
// as nSelf's migration contract has it: byte order of their names,
// *.down.sql left out, each with the checksum its ledger row records. Both
// stores read their files through it.
func Load(fsys fs.FS) ([]Migration, error) {
	names, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	var out []Migration
	for _, name := range names {
		if strings.HasSuffix(name, ".down.sql") {
			continue
		}
		b, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(b)
		out = append(out, Migration{Filename: name, SQL: string(b), Checksum: hex.EncodeToString(sum[:])})
	}
	return out, nil
}

// Applied counts the migrations of all that ledger (file name → checksum)
// records with the same checksum: a changed file is not applied.
func Applied(all []Migration, ledger map[string]string) int {
	n := 0
	for _, m := range all {
		if ledger[m.Filename] == m.Checksum {
			n++
		}
	}
	return n
}
