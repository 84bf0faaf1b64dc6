package audit

import (
	"encoding/json"
	"unicode/utf8"
)

// decodeEventFast decodes the plainest form of an event body in one pass,
// without reflection: an object whose members are named exactly as
// EventInput's, each once, with string values free of escapes, control
// characters and invalid UTF-8, and metadata an object. For such a body
// encoding/json gives the same EventInput. Anything else (an escape, a
// number, null, a name in other letters, a repeated member, trailing data,
// invalid metadata) returns ok false, and the caller decodes the body with
// encoding/json, which names what is wrong. Decoding was the largest part of
// a single POST's CPU (17 %); FuzzDecodeEventFast holds this to
// encoding/json on any input. The string members are cut from one copy of
// b, one allocation instead of one per member.
func decodeEventFast(b []byte) (in *EventInput, ok bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil, false
	}
	text := string(b)
	in = &EventInput{}
	var seen uint32
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return in, skipSpace(b, i+1) == len(b)
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return nil, false
		}
		name, next, ok := plainString(b, i)
		if !ok {
			return nil, false
		}
		field, bit := in.field(name)
		if bit == 0 || seen&bit != 0 {
			return nil, false
		}
		seen |= bit
		i = skipSpace(b, next)
		if i >= len(b) || b[i] != ':' {
			return nil, false
		}
		i = skipSpace(b, i+1)
		switch {
		case bit == metadataBit:
			if i >= len(b) || b[i] != '{' {
				return nil, false
			}
			end := skipValue(b, i) // brackets outside strings; Valid checks the rest
			if end < 0 || !json.Valid(b[i:end]) {
				return nil, false
			}
			in.Metadata = append(json.RawMessage(nil), b[i:end]...)
			i = end
		default:
			if i >= len(b) || b[i] != '"' {
				return nil, false
			}
			v, next, ok := plainString(b, i)
			if !ok {
				return nil, false
			}
			if field != nil {
				*field = text[next-1-len(v) : next-1]
			} else { // occurred_at
				t := text[next-1-len(v) : next-1]
				in.OccurredAt = &t
			}
			i = next
		}
		i = skipSpace(b, i)
		if i >= len(b) {
			return nil, false
		}
		switch b[i] {
		case ',':
			i = skipSpace(b, i+1)
		case '}':
			return in, skipSpace(b, i+1) == len(b)
		default:
			return nil, false
		}
	}
}

const metadataBit = 1 << 12

// field returns the string field a member name sets (nil for occurred_at
// and metadata) and the name's bit in the set of members seen (0: not a
// member).
func (in *EventInput) field(name []byte) (*string, uint32) {
	switch string(name) { // no allocation: the compiler compares in place
	case "occurred_at":
		return nil, 1 << 0
	case "actor_id":
		return &in.ActorID, 1 << 1
	case "actor_type":
		return &in.ActorType, 1 << 2
	case "action":
		return &in.Action, 1 << 3
	case "resource_type":
		return &in.ResourceType, 1 << 4
	case "resource_id":
		return &in.ResourceID, 1 << 5
	case "outcome":
		return &in.Outcome, 1 << 6
	case "severity":
		return &in.Severity, 1 << 7
	case "ip_address":
		return &in.IPAddress, 1 << 8
	case "user_agent":
		return &in.UserAgent, 1 << 9
	case "request_id":
		return &in.RequestID, 1 << 10
	case "source":
		return &in.Source, 1 << 11
	case "metadata":
		return nil, metadataBit
	case "idempotency_key":
		return &in.IdempotencyKey, 1 << 13
	}
	return nil, 0
}

// plainString reads the JSON string that starts at b[i] ('"') if it needs
// no decoding: no escape, no control character, valid UTF-8. It returns
// the text between the quotes and the index after the closing quote.
func plainString(b []byte, i int) (text []byte, next int, ok bool) {
	start := i + 1
	ascii := true
	for j := start; j < len(b); j++ {
		switch c := b[j]; {
		case c == '"':
			text = b[start:j]
			if !ascii && !utf8.Valid(text) {
				return nil, 0, false
			}
			return text, j + 1, true
		case c == '\\' || c < 0x20:
			return nil, 0, false
		case c >= utf8.RuneSelf:
			ascii = false
		}
	}
	return nil, 0, false
}

// canonicalFast returns the RFC 8785 form of a JSON object in one pass when
// the object is plain: member names ASCII without escapes (so that byte
// order is UTF-16 order), each once per object; strings without escapes,
// control characters or invalid UTF-8 (which RFC 8785 writes as they are);
// numbers that are integers of at most 15 digits other than -0 (which
// ECMAScript prints as they are written); true, false, null; nesting within
// maxDepth. Anything else returns ok false and the caller canonicalizes
// with Canonicalize, which decides and names any problem.
// FuzzCanonicalFast holds the two to the same bytes.
func canonicalFast(b []byte) (out CanonicalJSON, ok bool) {
	out, i, ok := appendCanonical(make([]byte, 0, len(b)), b, skipSpace(b, 0), 0)
	if !ok || skipSpace(b, i) != len(b) || len(out) == 0 || out[0] != '{' {
		return nil, false
	}
	return out, true
}

// appendCanonical appends the canonical form of the plain value at b[i] and
// returns the index after it.
func appendCanonical(dst, b []byte, i, depth int) ([]byte, int, bool) {
	if depth > maxDepth || i >= len(b) {
		return nil, 0, false
	}
	switch c := b[i]; {
	case c == '"':
		s, next, ok := plainString(b, i)
		if !ok {
			return nil, 0, false
		}
		dst = append(append(append(dst, '"'), s...), '"')
		return dst, next, true
	case c == '{':
		return appendCanonicalObject(dst, b, i, depth)
	case c == '[':
		dst = append(dst, '[')
		i = skipSpace(b, i+1)
		if i < len(b) && b[i] == ']' {
			return append(dst, ']'), i + 1, true
		}
		for n := 0; ; n++ {
			if n > 0 {
				dst = append(dst, ',')
			}
			var ok bool
			if dst, i, ok = appendCanonical(dst, b, i, depth+1); !ok {
				return nil, 0, false
			}
			i = skipSpace(b, i)
			if i >= len(b) {
				return nil, 0, false
			}
			if b[i] == ']' {
				return append(dst, ']'), i + 1, true
			}
			if b[i] != ',' {
				return nil, 0, false
			}
			i = skipSpace(b, i+1)
		}
	case c == 't' || c == 'f' || c == 'n':
		for _, lit := range []string{"true", "false", "null"} {
			if len(b)-i >= len(lit) && string(b[i:i+len(lit)]) == lit {
				return append(dst, lit...), i + len(lit), true
			}
		}
		return nil, 0, false
	case c == '-' || '0' <= c && c <= '9':
		j := i
		if b[j] == '-' {
			j++
		}
		start := j
		for j < len(b) && '0' <= b[j] && b[j] <= '9' {
			j++
		}
		digits := j - start
		if digits == 0 || digits > 15 || (b[start] == '0' && digits > 1) || (b[i] == '-' && digits == 1 && b[start] == '0') {
			return nil, 0, false
		}
		if j < len(b) && (b[j] == '.' || b[j] == 'e' || b[j] == 'E') {
			return nil, 0, false
		}
		return append(dst, b[i:j]...), j, true
	}
	return nil, 0, false
}

func appendCanonicalObject(dst, b []byte, i, depth int) ([]byte, int, bool) {
	type member struct{ key, value []byte }
	var members []member
	i = skipSpace(b, i+1)
	if i < len(b) && b[i] == '}' {
		return append(dst, "{}"...), i + 1, true
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return nil, 0, false
		}
		key, next, ok := plainString(b, i)
		if !ok {
			return nil, 0, false
		}
		for _, c := range key {
			if c >= utf8.RuneSelf {
				return nil, 0, false
			}
		}
		for _, m := range members {
			if string(m.key) == string(key) {
				return nil, 0, false // a duplicate: Canonicalize says so
			}
		}
		i = skipSpace(b, next)
		if i >= len(b) || b[i] != ':' {
			return nil, 0, false
		}
		var value []byte
		if value, i, ok = appendCanonical(nil, b, skipSpace(b, i+1), depth+1); !ok {
			return nil, 0, false
		}
		members = append(members, member{key, value})
		i = skipSpace(b, i)
		if i >= len(b) {
			return nil, 0, false
		}
		if b[i] == '}' {
			i++
			break
		}
		if b[i] != ',' {
			return nil, 0, false
		}
		i = skipSpace(b, i+1)
	}
	for j := 1; j < len(members); j++ { // insertion sort: objects are small
		for k := j; k > 0 && string(members[k].key) < string(members[k-1].key); k-- {
			members[k], members[k-1] = members[k-1], members[k]
		}
	}
	dst = append(dst, '{')
	for n, m := range members {
		if n > 0 {
			dst = append(dst, ',')
		}
		dst = append(append(append(dst, '"'), m.key...), `":`...)
		dst = append(dst, m.value...)
	}
	return append(dst, '}'), i, true
}

// decodeBatchFast decodes the plainest form of a batch body in one pass:
// {"events":[...]} with that one member, spelled so, and 1 to MaxBatch
// events that decodeEventFast takes, none with an idempotency key. Anything
// else returns ok false, and the caller decodes the body with encoding/json,
// which names what is wrong. Through encoding/json alone the body was read
// four times over (syntax, member names, the array, each event), 46 % of the
// service's CPU under 1000-event batches; FuzzDecodeBatchFast holds this to
// encoding/json on any input.
func decodeBatchFast(b []byte) (ins []*EventInput, ok bool) {
	i := skipSpace(b, 0)
	if i >= len(b) || b[i] != '{' {
		return nil, false
	}
	i = skipSpace(b, i+1)
	if i >= len(b) || b[i] != '"' {
		return nil, false
	}
	name, next, ok := plainString(b, i)
	if !ok || string(name) != "events" {
		return nil, false
	}
	i = skipSpace(b, next)
	if i >= len(b) || b[i] != ':' {
		return nil, false
	}
	i = skipSpace(b, i+1)
	if i >= len(b) || b[i] != '[' {
		return nil, false
	}
	i = skipSpace(b, i+1)
	ins = make([]*EventInput, 0, min(MaxBatch, len(b)/64+1))
	for {
		if len(ins) == MaxBatch || i >= len(b) || b[i] != '{' {
			return nil, false
		}
		end := skipValue(b, i) // brackets outside strings; decodeEventFast checks the rest
		if end < 0 {
			return nil, false
		}
		in, ok := decodeEventFast(b[i:end])
		if !ok || in.IdempotencyKey != "" {
			return nil, false
		}
		ins = append(ins, in)
		i = skipSpace(b, end)
		if i >= len(b) {
			return nil, false
		}
		if b[i] == ']' {
			break
		}
		if b[i] != ',' {
			return nil, false
		}
		i = skipSpace(b, i+1)
	}
	i = skipSpace(b, i+1)
	if i >= len(b) || b[i] != '}' || skipSpace(b, i+1) != len(b) {
		return nil, false
	}
	return ins, true
}
