// Parsing and checking one setting's text; ParseOllamaHost.

package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

func isSet(v string) string {
	if v == "" {
		return ""
	}
	return "(set)"
}

// ParseOllamaHost accepts what Ollama's own OLLAMA_HOST accepts: a URL, a
// host:port, a bare host or IP (port 11434), or empty (127.0.0.1:11434).
func ParseOllamaHost(s string) (*url.URL, error) {
	defaultPort := "11434"
	scheme, hostport, ok := strings.Cut(s, "://")
	switch {
	case !ok:
		scheme, hostport = "http", s
	case scheme == "http":
		defaultPort = "80"
	case scheme == "https":
		defaultPort = "443"
	default:
		return nil, fmt.Errorf("unsupported scheme %q", scheme)
	}
	hostport, path, _ := strings.Cut(hostport, "/")
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		host, port = "127.0.0.1", defaultPort
		if ip := net.ParseIP(strings.Trim(hostport, "[]")); ip != nil {
			host = ip.String()
		} else if hostport != "" {
			host = hostport
		}
	}
	if host == "" {
		host = "127.0.0.1"
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return nil, fmt.Errorf("invalid port %q", port)
	}
	u := &url.URL{Scheme: scheme, Host: net.JoinHostPort(host, port)}
	if path != "" {
		u.Path = "/" + path
	}
	return u, nil
}

// str sets a string setting, then checks it (nil: anything goes).
func str(field func(*Config) *string, check func(string) error) func(*Config, string) error {
	return func(c *Config, v string) error {
		*field(c) = v
		if check == nil {
			return nil
		}
		return check(v)
	}
}

// optional applies check only to a non-empty value.
func optional(check func(string) error) func(string) error {
	return func(v string) error {
		if v == "" {
			return nil
		}
		return check(v)
	}
}

func nonEmpty(v string) error {
	if v == "" {
		return errors.New("must not be empty")
	}
	return nil
}

func fileExists(path string) error {
	_, err := os.Stat(path)
	return err
}

func checkHostPort(v string) error {
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		return fmt.Errorf("want host:port: %w", err)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("invalid port %q", port)
	}
	return nil
}

func intIn(field func(*Config) *int, lo, hi int) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil {
			return fmt.Errorf("want an integer, got %q", v)
		}
		if n < lo || n > hi {
			return fmt.Errorf("want %d..%d, got %d", lo, hi, n)
		}
		*field(c) = n
		return nil
	}
}

// orAuto is set that also takes "auto", stored in field as -1 for Load to
// resolve from other settings.
func orAuto[T int | time.Duration](field func(*Config) *T, set func(*Config, string) error) func(*Config, string) error {
	return func(c *Config, v string) error {
		if v == "auto" {
			*field(c) = -1
			return nil
		}
		return set(c, v)
	}
}

// autoIntIn is intIn that also takes "auto".
func autoIntIn(field func(*Config) *int, lo, hi int) func(*Config, string) error {
	return orAuto(field, intIn(field, lo, hi))
}

// autoDurationIn is durationIn that also takes "auto".
func autoDurationIn(field func(*Config) *time.Duration, lo, hi time.Duration) func(*Config, string) error {
	return orAuto(field, durationIn(field, lo, hi))
}

// parseBaseURLs reads comma-separated http(s) base URLs.
func parseBaseURLs(v string) ([]*url.URL, error) {
	var out []*url.URL
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s == "" {
			continue
		}
		u, err := url.Parse(s)
		if err != nil {
			return nil, err
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("want an http(s) base URL such as http://vllm:8000/v1, got %q", s)
		}
		if u.User != nil {
			return nil, fmt.Errorf("put the key in EMBED_BACKEND_API_KEY, not in the URL %q", u.Redacted())
		}
		out = append(out, u)
	}
	return out, nil
}

func durationIn(field func(*Config) *time.Duration, lo, hi time.Duration) func(*Config, string) error {
	return func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil {
			return fmt.Errorf("want a duration such as 500ms or 2m, got %q", v)
		}
		if d < lo || d > hi {
			return fmt.Errorf("want %s..%s, got %s", lo, hi, d)
		}
		*field(c) = d
		return nil
	}
}

func boolVar(field func(*Config) *bool) func(*Config, string) error {
	return func(c *Config, v string) error {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return fmt.Errorf("want true or false, got %q", v)
		}
		*field(c) = b
		return nil
	}
}

func positive64(field func(*Config) *int64) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 1 {
			return fmt.Errorf("want a positive integer, got %q", v)
		}
		*field(c) = n
		return nil
	}
}
