package audit

import (
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Filter selects events of one account. Empty fields do not filter.
type Filter struct {
	ActorID      string
	ActorType    string
	Action       string // exact match
	ActionPrefix string // "user." for the query action=user.*
	ResourceType string
	ResourceID   string
	Outcome      string
	Severity     string
	Source       string
	Since        time.Time // inclusive; zero: no lower bound
	Until        time.Time // exclusive; zero: no upper bound

	Limit int     // page size, 1..MaxLimit
	Asc   bool    // oldest first; the default is newest first
	After *Cursor // continue after this position (from a next_cursor)
}

// Page sizes of the list routes.
const (
	DefaultLimit = 50
	MaxLimit     = 1000
)

// Interval is the bucket width of a stats timeline.
type Interval string

const (
	Hour Interval = "hour"
	Day  Interval = "day"
)

// filterParams are the query parameters that select events, common to the
// list, actor and stats routes.
var filterParams = map[string]bool{
	"actor_id": true, "actor_type": true, "action": true, "resource_type": true, "resource_id": true,
	"outcome": true, "severity": true, "source": true, "since": true, "until": true,
}

// ParseListQuery parses the query of GET /api/v1/events and returns the
// filter and the raw cursor (decode it with a CursorCodec). Unknown or
// repeated parameters and bad values are EINVALID errors naming the
// parameter.
func ParseListQuery(q url.Values) (Filter, string, error) {
	f, err := parseQuery(q, map[string]bool{"limit": true, "sort": true, "cursor": true})
	if err != nil {
		return Filter{}, "", err
	}
	f.Limit = DefaultLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxLimit {
			return Filter{}, "", Errorf(EINVALID, "limit: must be an integer from 1 to %d", MaxLimit)
		}
		f.Limit = n
	} else if q.Has("limit") {
		return Filter{}, "", Errorf(EINVALID, "limit: must be an integer from 1 to %d", MaxLimit)
	}
	switch q.Get("sort") {
	case "desc":
	case "asc":
		f.Asc = true
	default:
		if q.Has("sort") {
			return Filter{}, "", Errorf(EINVALID, "sort: must be asc or desc")
		}
	}
	return f, q.Get("cursor"), nil
}

// ParseStatsQuery parses the query of GET /api/v1/stats: the filters and
// interval (hour or day, default day).
func ParseStatsQuery(q url.Values) (Filter, Interval, error) {
	f, err := parseQuery(q, map[string]bool{"interval": true})
	if err != nil {
		return Filter{}, "", err
	}
	iv := Day
	switch v := q.Get("interval"); v {
	case "", "day":
		if v == "" && q.Has("interval") {
			return Filter{}, "", Errorf(EINVALID, "interval: must be hour or day")
		}
	case "hour":
		iv = Hour
	default:
		return Filter{}, "", Errorf(EINVALID, "interval: must be hour or day")
	}
	return f, iv, nil
}

// ParseFilterQuery parses the list filters of a route that takes no paging
// parameters (the live tail, the export), refusing any parameter that is
// neither a filter nor one of extra; the caller parses extra's values.
func ParseFilterQuery(q url.Values, extra ...string) (Filter, error) {
	allowed := make(map[string]bool, len(extra))
	for _, e := range extra {
		allowed[e] = true
	}
	return parseQuery(q, allowed)
}

// IsZero reports whether f selects every event: no filter and no paging.
func (f Filter) IsZero() bool { return f == Filter{} }

func parseQuery(q url.Values, extra map[string]bool) (Filter, error) {
	names := make([]string, 0, len(q))
	for k := range q {
		names = append(names, k)
	}
	sort.Strings(names) // report the same parameter first every time
	for _, k := range names {
		if !filterParams[k] && !extra[k] {
			return Filter{}, Errorf(EINVALID, "%s: unknown query parameter", Clip(k, 64))
		}
		if len(q[k]) > 1 {
			return Filter{}, Errorf(EINVALID, "%s: given more than once", Clip(k, 64))
		}
		if err := CheckText(k, q.Get(k), 1024); err != nil {
			return Filter{}, err
		}
	}
	f := Filter{
		ActorID:      q.Get("actor_id"),
		ActorType:    q.Get("actor_type"),
		ResourceType: q.Get("resource_type"),
		ResourceID:   q.Get("resource_id"),
		Outcome:      q.Get("outcome"),
		Severity:     q.Get("severity"),
		Source:       q.Get("source"),
	}
	if a := q.Get("action"); a != "" {
		if prefix, ok := strings.CutSuffix(a, ".*"); ok {
			if !ValidAction(prefix) {
				return Filter{}, Errorf(EINVALID, "action: prefix must be dot notation followed by .* such as user.*")
			}
			f.ActionPrefix = prefix + "."
		} else if !ValidAction(a) {
			return Filter{}, Errorf(EINVALID, "action: must be dot notation such as user.login, or a prefix such as user.*")
		} else {
			f.Action = a
		}
	}
	enums := []struct {
		name, value string
		set         []string
	}{
		{"actor_type", f.ActorType, ActorTypes},
		{"outcome", f.Outcome, Outcomes},
		{"severity", f.Severity, Severities},
	}
	for _, e := range enums {
		if e.value != "" && !oneOf(e.value, e.set) {
			return Filter{}, Errorf(EINVALID, "%s: must be one of %s", e.name, strings.Join(e.set, ", "))
		}
	}
	var err error
	if f.Since, err = parseTimeParam(q, "since"); err != nil {
		return Filter{}, err
	}
	if f.Until, err = parseTimeParam(q, "until"); err != nil {
		return Filter{}, err
	}
	if !f.Since.IsZero() && !f.Until.IsZero() && !f.Since.Before(f.Until) {
		return Filter{}, Errorf(EINVALID, "since: must be before until")
	}
	return f, nil
}

func parseTimeParam(q url.Values, name string) (time.Time, error) {
	if !q.Has(name) {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, q.Get(name))
	if err != nil || t.Year() < 1 || t.Year() > 9999 {
		return time.Time{}, Errorf(EINVALID, "%s: not an RFC 3339 time such as 2026-01-02T15:04:05Z", name)
	}
	// Stored times have microsecond resolution; rounding the bound up keeps
	// "since" inclusive and "until" exclusive at that resolution.
	if r := t.UTC().Truncate(time.Microsecond); !r.Equal(t) {
		return r.Add(time.Microsecond), nil
	}
	return t.UTC(), nil
}

// Clip returns client input for quoting in an error message: invalid UTF-8
// replaced, and cut to at most n bytes on a character boundary (with
// "..." after), so that an answer never echoes a large or broken input.
func Clip(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "..."
}
