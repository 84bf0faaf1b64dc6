package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
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
	"time"

	"github.com/nself-org/nself-audit/internal/audit"
	"github.com/nself-org/nself-audit/internal/auth"
	"github.com/nself-org/nself-audit/internal/capture"
	"github.com/nself-org/nself-audit/internal/httpapi"
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

	// SigningKey signs checkpoints: NSELF_AUDIT_SIGNING_KEY(_FILE), else
	// generated into the data folder (SigningKeyGenerated names the file).
	SigningKey          ed25519.PrivateKey
	SigningKeyGenerated string
	CheckpointEvents    int64         // NSELF_AUDIT_CHECKPOINT_EVENTS
	CheckpointInterval  time.Duration // NSELF_AUDIT_CHECKPOINT_SECONDS

	// QueryConcurrency is NSELF_AUDIT_QUERY_CONCURRENCY: how many reads
	// run in PostgreSQL at once; 0 keeps postgres.DefaultQueryConcurrency.
	QueryConcurrency int

	stream httpapi.StreamConfig // defaults; tests shorten them
	// Redact adds name patterns of secret columns to the defaults
	// (NSELF_AUDIT_REDACT_COLUMNS, comma-separated).
	Redact []string
}

// requireSecret is the serve verb's check: with PostgreSQL the plugin token
// must come from the environment (nSelf generates it).
func (c *Config) requireSecret() error {
	if c.Secret == "" && !c.Embedded() {
		return fmt.Errorf("PLUGIN_INTERNAL_SECRET: required with PostgreSQL (the plugin token; PLUGIN_SECRET is accepted too)")
	}
	return nil
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
	env := func(name string) (string, error) { return readEnv(getenv, name) }
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
		switch {
		case path == "":
			return nil, fmt.Errorf("DATABASE_URL: sqlite: needs a file path, such as sqlite:./data/audit.db")
		case strings.ContainsAny(path, "?#"):
			return nil, fmt.Errorf("DATABASE_URL: the sqlite: form takes a plain file path, without ? or # parameters")
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
	if cfg.Secret, err = readSecret(getenv); err != nil {
		return nil, err
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
	keyRaw, err := env("NSELF_AUDIT_SIGNING_KEY")
	if err != nil {
		return nil, err
	}
	if keyRaw != "" {
		if cfg.SigningKey, err = audit.ParseSigningKey(keyRaw); err != nil {
			return nil, fmt.Errorf("NSELF_AUDIT_SIGNING_KEY: %v (want the standard base64 of an Ed25519 seed)", err)
		}
	}
	cfg.CheckpointEvents, cfg.CheckpointInterval = 1000, 60*time.Second
	if v := getenv("NSELF_AUDIT_CHECKPOINT_EVENTS"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("NSELF_AUDIT_CHECKPOINT_EVENTS: must be a whole number of at least 1")
		}
		cfg.CheckpointEvents = n
	}
	if v := getenv("NSELF_AUDIT_CHECKPOINT_SECONDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 86400 {
			return nil, fmt.Errorf("NSELF_AUDIT_CHECKPOINT_SECONDS: must be a whole number from 1 to 86400")
		}
		cfg.CheckpointInterval = time.Duration(n) * time.Second
	}
	if v := getenv("NSELF_AUDIT_QUERY_CONCURRENCY"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 1000 {
			return nil, fmt.Errorf("NSELF_AUDIT_QUERY_CONCURRENCY: must be a whole number from 1 to 1000")
		}
		cfg.QueryConcurrency = n
	}
	if cfg.Redact, err = capture.ParsePatterns(getenv("NSELF_AUDIT_REDACT_COLUMNS")); err != nil {
		return nil, fmt.Errorf("NSELF_AUDIT_REDACT_COLUMNS: %v", err)
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

// readEnv returns the variable name, else the trimmed content of the file
// that NAME_FILE names (Docker secrets). An error names the variable, never
// the value.
func readEnv(getenv func(string) string, name string) (string, error) {
	v := getenv(name)
	if v != "" {
		return v, nil
	}
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

// readSecret returns the plugin token: PLUGIN_INTERNAL_SECRET, else
// PLUGIN_SECRET, each also as *_FILE; "" when none is set. The service and
// the client verbs read it the same way.
func readSecret(getenv func(string) string) (string, error) {
	secret, err := readEnv(getenv, "PLUGIN_INTERNAL_SECRET")
	if err != nil {
		return "", err
	}
	name := "PLUGIN_INTERNAL_SECRET"
	if secret == "" {
		name = "PLUGIN_SECRET"
		if secret, err = readEnv(getenv, "PLUGIN_SECRET"); err != nil {
			return "", err
		}
	}
	if secret != "" && len(secret) < minSecretLen {
		return "", fmt.Errorf("%s: must be at least %d characters", name, minSecretLen)
	}
	return secret, nil
}

// Files kept in the data folder when nothing configures them.
const (
	secretFile     = "plugin-secret" // the plugin token (embedded store only)
	signingKeyFile = "signing-key"   // the checkpoint signing key, base64
)

// prepareDataDir creates the data folder (0700) when the embedded store or
// a generated file needs it, reads or generates the plugin token (embedded
// store only) and the signing key that nothing configured, and reports
// whether the token came from the folder.
func (c *Config) prepareDataDir() (secretFromFile bool, err error) {
	needSecret := c.Embedded() && c.Secret == ""
	if needSecret || c.SigningKey == nil || (c.Embedded() && filepath.Dir(c.SQLitePath) == filepath.Clean(c.DataDir)) {
		if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
			return false, fmt.Errorf("NSELF_AUDIT_DATA_DIR: cannot create %s: %v", c.DataDir, err)
		}
	}
	if c.Embedded() {
		if dir := filepath.Dir(c.SQLitePath); dir != c.DataDir {
			if err := os.MkdirAll(dir, 0o700); err != nil {
				return false, fmt.Errorf("DATABASE_URL: cannot create %s: %v", dir, err)
			}
		}
	}
	if needSecret {
		secret, err := keepFile(filepath.Join(c.DataDir, secretFile), func() (string, error) {
			raw := make([]byte, 32)
			_, err := rand.Read(raw)
			return hex.EncodeToString(raw), err // 64 characters
		})
		if err != nil {
			return false, err
		}
		if len(secret) < minSecretLen {
			return false, fmt.Errorf("%s: holds fewer than %d characters; delete it to make a new one", filepath.Join(c.DataDir, secretFile), minSecretLen)
		}
		c.Secret, secretFromFile = secret, true
	}
	if c.SigningKey == nil {
		path := filepath.Join(c.DataDir, signingKeyFile)
		raw, err := keepFile(path, func() (string, error) {
			seed := make([]byte, ed25519.SeedSize)
			_, err := rand.Read(seed)
			return base64.StdEncoding.EncodeToString(seed), err
		})
		if err != nil {
			return false, err
		}
		if c.SigningKey, err = audit.ParseSigningKey(raw); err != nil {
			return false, fmt.Errorf("%s: %v", path, err)
		}
		c.SigningKeyGenerated = path
	}
	return secretFromFile, nil
}

// keepFile returns the trimmed content of path, first writing it (0600)
// with what generate makes when the file does not exist. The file is
// written aside and linked into place: of two first starts racing, one
// wins and the other reads its file, and nobody reads a half-written one.
func keepFile(path string, generate func() (string, error)) (string, error) {
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		return strings.TrimSpace(string(b)), nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("cannot read %s: %v", path, err)
	}
	value, err := generate()
	if err != nil {
		return "", err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return "", fmt.Errorf("cannot write in %s: %v", filepath.Dir(path), err)
	}
	defer os.Remove(tmp.Name())
	_, werr := tmp.WriteString(value + "\n")
	if err := errors.Join(werr, tmp.Sync(), tmp.Close()); err != nil {
		return "", fmt.Errorf("cannot write %s: %v", tmp.Name(), err)
	}
	if err := os.Link(tmp.Name(), path); errors.Is(err, fs.ErrExist) {
		return keepFile(path, generate)
	} else if err != nil {
		return "", fmt.Errorf("cannot create %s: %v", path, err)
	}
	return value, nil
}
