package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"math"
	"sort"
	"strconv"
	"strings"
	"unicode/utf16"
)

// CanonicalJSON is JSON text in the JSON Canonicalization Scheme (RFC 8785):
// no insignificant whitespace, object members sorted by their names' UTF-16
// code units, numbers as ECMAScript prints IEEE-754 doubles, strings with the
// minimal escaping. Metadata is stored and hashed in this form, so anyone
// can recompute a hash with any RFC 8785 implementation.
type CanonicalJSON []byte

// MarshalJSON writes the canonical text as it is.
func (c CanonicalJSON) MarshalJSON() ([]byte, error) {
	if len(c) == 0 {
		return []byte("{}"), nil
	}
	return c, nil
}

// UnmarshalJSON canonicalizes whatever JSON value it is given.
func (c *CanonicalJSON) UnmarshalJSON(b []byte) error {
	out, err := Canonicalize(b)
	if err != nil {
		return err
	}
	*c = out
	return nil
}

// maxDepth bounds nesting in metadata, so a deeply nested body cannot
// exhaust the stack.
const maxDepth = 64

// CanonicalizeMetadata validates event metadata (absent or null means {}; it
// must be a JSON object of at most MaxMetadataBytes, without duplicate
// member names or NUL characters) and returns its canonical form.
func CanonicalizeMetadata(raw json.RawMessage) (CanonicalJSON, error) {
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) == 0 || string(trimmed) == "null" {
		return CanonicalJSON("{}"), nil
	}
	if trimmed[0] != '{' {
		return nil, Errorf(EINVALID, "metadata: must be a JSON object")
	}
	if len(trimmed) > MaxMetadataBytes {
		return nil, Errorf(EINVALID, "metadata: larger than %d KiB", MaxMetadataBytes>>10)
	}
	if out, ok := canonicalFast(trimmed); ok && len(out) <= MaxMetadataBytes {
		return out, nil
	}
	out, err := Canonicalize(trimmed)
	if err != nil {
		return nil, Errorf(EINVALID, "metadata: %s", ErrorMessage(err))
	}
	if len(out) > MaxMetadataBytes {
		return nil, Errorf(EINVALID, "metadata: larger than %d KiB", MaxMetadataBytes>>10)
	}
	return out, nil
}

// Canonicalize returns the RFC 8785 form of one JSON value. Errors are
// EINVALID and say what is wrong.
func Canonicalize(raw []byte) (CanonicalJSON, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var buf bytes.Buffer
	if err := canonValue(dec, &buf, 0); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, Errorf(EINVALID, "unexpected data after the JSON value")
	}
	return buf.Bytes(), nil
}

func canonValue(dec *json.Decoder, buf *bytes.Buffer, depth int) error {
	if depth > maxDepth {
		return Errorf(EINVALID, "nested deeper than %d levels", maxDepth)
	}
	tok, err := dec.Token()
	if err != nil {
		return Errorf(EINVALID, "malformed JSON")
	}
	switch v := tok.(type) {
	case json.Delim:
		switch v {
		case '{':
			return canonObject(dec, buf, depth)
		case '[':
			buf.WriteByte('[')
			for i := 0; dec.More(); i++ {
				if i > 0 {
					buf.WriteByte(',')
				}
				if err := canonValue(dec, buf, depth+1); err != nil {
					return err
				}
			}
			if _, err := dec.Token(); err != nil {
				return Errorf(EINVALID, "malformed JSON")
			}
			buf.WriteByte(']')
			return nil
		}
		return Errorf(EINVALID, "malformed JSON")
	case string:
		return writeString(buf, v)
	case json.Number:
		f, err := strconv.ParseFloat(string(v), 64)
		if err != nil || math.IsInf(f, 0) {
			return Errorf(EINVALID, "number %s is out of range", Clip(string(v), 64))
		}
		buf.WriteString(FormatNumber(f))
	case bool:
		buf.WriteString(strconv.FormatBool(v))
	case nil:
		buf.WriteString("null")
	}
	return nil
}

func canonObject(dec *json.Decoder, buf *bytes.Buffer, depth int) error {
	type member struct {
		key   string
		value []byte
	}
	var members []member
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return Errorf(EINVALID, "malformed JSON")
		}
		key := tok.(string) // the decoder only yields strings in key position
		if seen[key] {
			return Errorf(EINVALID, "duplicate member %q", Clip(key, 64))
		}
		seen[key] = true
		var vb bytes.Buffer
		if err := canonValue(dec, &vb, depth+1); err != nil {
			return err
		}
		members = append(members, member{key, vb.Bytes()})
	}
	if _, err := dec.Token(); err != nil {
		return Errorf(EINVALID, "malformed JSON")
	}
	sort.Slice(members, func(i, j int) bool { return lessUTF16(members[i].key, members[j].key) })
	buf.WriteByte('{')
	for i, m := range members {
		if i > 0 {
			buf.WriteByte(',')
		}
		if err := writeString(buf, m.key); err != nil {
			return err
		}
		buf.WriteByte(':')
		buf.Write(m.value)
	}
	buf.WriteByte('}')
	return nil
}

// lessUTF16 orders strings by their UTF-16 code units, as RFC 8785 requires.
func lessUTF16(a, b string) bool {
	ua, ub := utf16.Encode([]rune(a)), utf16.Encode([]rune(b))
	for i := 0; i < len(ua) && i < len(ub); i++ {
		if ua[i] != ub[i] {
			return ua[i] < ub[i]
		}
	}
	return len(ua) < len(ub)
}

// writeString writes s as a JSON string with RFC 8785's escaping (see
// appendCanonicalString); a NUL is refused.
func writeString(buf *bytes.Buffer, s string) error {
	if strings.IndexByte(s, 0) >= 0 {
		return Errorf(EINVALID, "strings may not contain NUL characters")
	}
	buf.Write(appendCanonicalString(buf.AvailableBuffer(), s))
	return nil
}

// appendCanonicalString appends s as a JSON string with RFC 8785's
// escaping: only the quote, the backslash and control characters are
// escaped. Runs of bytes that need no escaping are copied at once.
func appendCanonicalString(dst []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue // UTF-8 multi-byte sequences never contain such bytes
		}
		dst = append(dst, s[start:i]...)
		switch c {
		case '"', '\\':
			dst = append(dst, '\\', c)
		case '\b':
			dst = append(dst, '\\', 'b')
		case '\f':
			dst = append(dst, '\\', 'f')
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\r':
			dst = append(dst, '\\', 'r')
		case '\t':
			dst = append(dst, '\\', 't')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// FormatNumber prints f as ECMAScript's Number.prototype.toString does,
// which is the number form of RFC 8785.
func FormatNumber(f float64) string {
	if f == 0 {
		return "0" // also for -0
	}
	if f < 0 {
		return "-" + FormatNumber(-f)
	}
	// Shortest round-trip digits and exponent: d.ddddde±x.
	e := strconv.FormatFloat(f, 'e', -1, 64)
	mant, expStr, _ := strings.Cut(e, "e")
	digits := strings.Replace(mant, ".", "", 1)
	exp, _ := strconv.Atoi(expStr)
	k, n := len(digits), exp+1 // value = 0.digits × 10^n
	switch {
	case k <= n && n <= 21:
		return digits + strings.Repeat("0", n-k)
	case 0 < n && n <= 21:
		return digits[:n] + "." + digits[n:]
	case -6 < n && n <= 0:
		return "0." + strings.Repeat("0", -n) + digits
	}
	sign := "+"
	if n-1 < 0 {
		sign = "-"
	}
	m := digits[:1]
	if k > 1 {
		m += "." + digits[1:]
	}
	return m + "e" + sign + strconv.Itoa(abs(n-1))
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// GenesisHash is the prev_hash of the first event of every account: 32 zero
// bytes in hex.
var GenesisHash = strings.Repeat("0", 64)

// Canonical returns the canonical encoding of e that its hash covers: the
// RFC 8785 form of a JSON object holding every field of the event except
// prev_hash and hash, times in TimeFormat. See docs/CHAIN.md.
func Canonical(e *Event) []byte {
	return appendCanonicalEvent(make([]byte, 0, canonicalSizeHint(e)), e)
}

// canonicalSizeHint is room enough for Canonical(e) in most events.
func canonicalSizeHint(e *Event) int { return 512 + len(e.Metadata) + len(e.UserAgent) }

// appendCanonicalEvent appends Canonical(e) to dst, its members written in
// RFC 8785 order (ASCII names, sorted). Times and the id need no escaping.
func appendCanonicalEvent(dst []byte, e *Event) []byte {
	meta := e.Metadata
	if len(meta) == 0 {
		meta = CanonicalJSON("{}")
	}
	dst = appendMembers(dst, `{"action":`, e.Action, `,"actor_id":`, e.ActorID, `,"actor_type":`, e.ActorType)
	dst = appendUUID(append(dst, `,"id":"`...), e.ID)
	dst = appendMembers(dst, `","ip_address":`, e.IPAddress)
	dst = append(append(dst, `,"metadata":`...), meta...)
	dst = e.OccurredAt.UTC().AppendFormat(append(dst, `,"occurred_at":"`...), TimeFormat)
	dst = appendMembers(dst, `","outcome":`, e.Outcome)
	dst = e.RecordedAt.UTC().AppendFormat(append(dst, `,"recorded_at":"`...), TimeFormat)
	dst = appendMembers(dst, `","request_id":`, e.RequestID, `,"resource_id":`, e.ResourceID,
		`,"resource_type":`, e.ResourceType)
	dst = strconv.AppendInt(append(dst, `,"seq":`...), e.Seq, 10)
	dst = appendMembers(dst, `,"severity":`, e.Severity, `,"source":`, e.Source,
		`,"source_account_id":`, e.SourceAccountID, `,"user_agent":`, e.UserAgent) // validated input holds no NUL
	return append(dst, '}')
}

// appendMembers appends pairs of a member's name (with the punctuation
// before its value) and its string value, escaped as RFC 8785 says.
func appendMembers(dst []byte, pairs ...string) []byte {
	for i := 0; i+1 < len(pairs); i += 2 {
		dst = appendCanonicalString(append(dst, pairs[i]...), pairs[i+1])
	}
	return dst
}

// ComputeHash returns hex(SHA-256(prev || Canonical(e))) where prev is the 32
// bytes that prevHash (hex) names.
func ComputeHash(prevHash string, e *Event) (string, error) {
	// One buffer: prev's 32 bytes, then the canonical encoding.
	b := make([]byte, sha256.Size, sha256.Size+canonicalSizeHint(e))
	if len(prevHash) != 2*sha256.Size {
		return "", errors.New("prev_hash is not 64 hex digits")
	}
	if _, err := hex.Decode(b, []byte(prevHash)); err != nil {
		return "", errors.New("prev_hash is not 64 hex digits")
	}
	sum := sha256.Sum256(appendCanonicalEvent(b, e))
	return hex.EncodeToString(sum[:]), nil
}

// Link places e after the event whose seq and hash are given: it sets Seq,
// PrevHash and Hash. Use seq 0 and GenesisHash for an account's first event.
func Link(e *Event, prevSeq int64, prevHash string) error {
	e.Seq = prevSeq + 1
	e.PrevHash = prevHash
	h, err := ComputeHash(prevHash, e)
	if err != nil {
		return err
	}
	e.Hash = h
	return nil
}

func sha256Hex(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
