package main

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/nself-org/nself-audit/internal/auth"
)

// Config is the service's configuration, read from the environment.
type Config struct {
	DatabaseURL string // PostgreSQL; "" when the store is embedded
	SQLitePath  string // the embedded store's file, when DatabaseURL is ""
	DataDir     string // NSELF_AUDIT_DATA_DIR: the embedded store's folder
	Host        string
	Port        int
	Secret      string          // the plugin token
	JWT         *auth.JWTConfig // nil: Hasura JWTs are not accepted
	LogLevel    slog.Level
	LogJSON     bool
}

// Embedded reports whether the store is the embedded SQLite file.
func (c *Config) Embedded() bool { return c.DatabaseURL == "" }

// Addr is the listen address.
func (c *Config) Addr() string { return net.JoinHostPort(c.Host, strconv.Itoa(c.Port)) }

// minSecretLen keeps a guessable plugin token from being accepted; nSelf
// generates far longer ones.
const minSecretLen = 16

// LoadConfig reads the configuration from getenv. Each error names the
// variable at fault and never its value.
func LoadConfig(getenv func(string) string) (*Config, error) {
	env := func(name string) (string, error) {
		v := getenv(name)
		if v != "" {
			return v, nil
		}
		// NAME_FILE holds the value in a file (Docker secrets).
		path := getenv(name + "_FILE")
		if path == "" {
			return "", nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("%s_FILE: cannot read %s", name, path)
		}
		return strings.TrimSpace(string(b)), nil
	}
	cfg := &Config{Host: "127.0.0.1", Port: 3843, LogLevel: slog.LevelInfo}
	var err error
	if cfg.DatabaseURL, err = env("DATABASE_URL"); err != nil {
		return nil, err
	}
	cfg.DataDir = getenv("NSELF_AUDIT_DATA_DIR")
	if cfg.DataDir == "" {
		cfg.DataDir = "data"
	}
	switch u := cfg.DatabaseURL; {
	case u == "":
		cfg.SQLitePath = filepath.Join(cfg.DataDir, "nself-audit.db")
	case strings.HasPrefix(u, "postgres://"), strings.HasPrefix(u, "postgresql://"):
	case strings.HasPrefix(u, "sqlite:"), strings.HasPrefix(u, "file:"):
		_, path, _ := strings.Cut(u, ":")
		if strings.HasPrefix(path, "//") { // sqlite:///abs/path
			path = path[2:]
		}
		if path == "" {
			return nil, fmt.Errorf("DATABASE_URL: sqlite: needs a file path, such as sqlite:./data/audit.db")
		}
		cfg.SQLitePath, cfg.DatabaseURL = path, ""
	default:
		return nil, fmt.Errorf("DATABASE_URL: must start with postgres://, postgresql://, sqlite: or file:")
	}
	if v := getenv("HOST"); v != "" {
		if v != "localhost" && net.ParseIP(v) == nil {
			return nil, fmt.Errorf("HOST: must be an IP address such as 127.0.0.1 or 0.0.0.0")
		}
		cfg.Host = v
	}
	if v := getenv("PORT"); v != "" {
		p, err := strconv.Atoi(v)
		if err != nil || p < 0 || p > 65535 {
			return nil, fmt.Errorf("PORT: must be a number from 0 to 65535")
		}
		cfg.Port = p
	}
	if cfg.Secret, err = env("PLUGIN_INTERNAL_SECRET"); err != nil {
		return nil, err
	}
	name := "PLUGIN_INTERNAL_SECRET"
	if cfg.Secret == "" {
		name = "PLUGIN_SECRET"
		if cfg.Secret, err = env("PLUGIN_SECRET"); err != nil {
			return nil, err
		}
	}
	switch {
	case cfg.Secret == "" && cfg.Embedded():
		// Made or read from the data folder at start (ensureSecret).
	case cfg.Secret == "":
		return nil, fmt.Errorf("PLUGIN_INTERNAL_SECRET: required with PostgreSQL (the plugin token; PLUGIN_SECRET is accepted too)")
	case len(cfg.Secret) < minSecretLen:
		return nil, fmt.Errorf("%s: must be at least %d characters", name, minSecretLen)
	}
	jwtRaw, err := env("HASURA_GRAPHQL_JWT_SECRET")
	if err != nil {
		return nil, err
	}
	if jwtRaw != "" {
		if cfg.JWT, err = auth.ParseJWTConfig(jwtRaw); err != nil {
			return nil, fmt.Errorf("HASURA_GRAPHQL_JWT_SECRET: %v", err)
		}
	}
	switch v := strings.ToLower(getenv("LOG_LEVEL")); v {
	case "", "info":
	case "debug":
		cfg.LogLevel = slog.LevelDebug
	case "warn", "warning":
		cfg.LogLevel = slog.LevelWarn
	case "error":
		cfg.LogLevel = slog.LevelError
	default:
		return nil, fmt.Errorf("LOG_LEVEL: must be debug, info, warn or error")
	}
	switch v := strings.ToLower(getenv("LOG_FORMAT")); v {
	case "", "text":
	case "json":
		cfg.LogJSON = true
	default:
		return nil, fmt.Errorf("LOG_FORMAT: must be text or json")
	}
	return cfg, nil
}

// secretFile is where the embedded store keeps a generated plugin token.
const secretFile = "plugin-secret"

// prepareEmbedded creates the data folder (0700) and, when no plugin token
// is configured, reads the one kept in it or generates and keeps a new one
// (0600). It reports whether the token came from that file.
func (c *Config) prepareEmbedded() (fromFile bool, err error) {
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return false, fmt.Errorf("NSELF_AUDIT_DATA_DIR: cannot create %s: %v", c.DataDir, err)
	}
	if dir := filepath.Dir(c.SQLitePath); dir != c.DataDir {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return false, fmt.Errorf("DATABASE_URL: cannot create %s: %v", dir, err)
		}
	}
	if c.Secret != "" {
		return false, nil
	}
	path := filepath.Join(c.DataDir, secretFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		c.Secret = strings.TrimSpace(string(b))
		if len(c.Secret) < minSecretLen {
			return false, fmt.Errorf("%s: holds fewer than %d characters; delete it to make a new one", path, minSecretLen)
		}
		return true, nil
	case !errors.Is(err, fs.ErrNotExist):
		return false, fmt.Errorf("cannot read %s: %v", path, err)
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return false, err
	}
	secret := hex.EncodeToString(raw) // 64 characters
	// Written aside, then linked into place: the link fails if another
	// first start won the race, and nobody ever reads a half-written file.
	tmp, err := os.CreateTemp(c.DataDir, ".plugin-secret-*")
	if err != nil {
		return false, fmt.Errorf("cannot write in %s: %v", c.DataDir, err)
	}
	defer os.Remove(tmp.Name())
	_, werr := tmp.WriteString(secret + "\n")
	if err := errors.Join(werr, tmp.Sync(), tmp.Close()); err != nil {
		return false, fmt.Errorf("cannot write %s: %v", tmp.Name(), err)
	}
	if err := os.Link(tmp.Name(), path); errors.Is(err, fs.ErrExist) {
		return c.prepareEmbedded()
	} else if err != nil {
		return false, fmt.Errorf("cannot create %s: %v", path, err)
	}
	c.Secret = secret
	return true, nil
}
