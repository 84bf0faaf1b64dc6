package main

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"

	"github.com/nself-org/nself-audit/internal/auth"
)

// Config is the service's configuration, read from the environment.
type Config struct {
	DatabaseURL string
	Host        string
	Port        int
	Secret      string          // the plugin token
	JWT         *auth.JWTConfig // nil: Hasura JWTs are not accepted
	LogLevel    slog.Level
	LogJSON     bool
}

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
	if cfg.DatabaseURL == "" {
		return nil, fmt.Errorf("DATABASE_URL: required (a PostgreSQL connection string such as postgres://user:pass@127.0.0.1:5432/db)")
	}
	if !strings.HasPrefix(cfg.DatabaseURL, "postgres://") && !strings.HasPrefix(cfg.DatabaseURL, "postgresql://") {
		return nil, fmt.Errorf("DATABASE_URL: must start with postgres:// or postgresql://")
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
	case cfg.Secret == "":
		return nil, fmt.Errorf("PLUGIN_INTERNAL_SECRET: required (the plugin token; PLUGIN_SECRET is accepted too)")
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
