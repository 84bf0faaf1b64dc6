package audit

import (
	"bytes"
	"encoding/json"
	"slices"
	"testing"
)

// tokenMembers lists the member names of a JSON object with encoding/json's
// tokenizer: the slow, obviously right answer eachMember must match.
func tokenMembers(raw []byte) []string {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil
	}
	var names []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return names
		}
		names = append(names, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return names
		}
	}
	return names
}

func scanMembers(raw []byte) []string {
	var names []string
	eachMember(raw, func(name string) bool {
		names = append(names, name)
		return true
	})
	return names
}

var memberCases = []string{
	`{}`,
	` { } `,
	`{"a":1}`,
	`{"a":1,"b":"x","c":null,"d":true,"e":false,"f":-1.5e3}`,
	"{\n\t\"a\" :\r\n [1, {\"b\": [2, \"]}\"]}] ,\"c\":{\"d\":{\"e\":\"}\"}}}",
	`{"a\"b":"c\\","d\u0041":"\"","":0}`,
	`{"x":"{[","y":"]}"}`,
	`{"Action":"a","action":"b","action":"c"}`,
	`[1,2]`,
	`"str"`,
	`42`,
	`{"metadata":{"nested":{"deep":[[[[]]]]}},"z":[]}`,
	`{"é":"ü","日本":"語"}`,
}

func TestEachMember(t *testing.T) {
	for _, c := range memberCases {
		if !json.Valid([]byte(c)) {
			t.Fatalf("case %q is not valid JSON", c)
		}
		got, want := scanMembers([]byte(c)), tokenMembers([]byte(c))
		if !slices.Equal(got, want) {
			t.Errorf("%s: eachMember %q, tokenizer %q", c, got, want)
		}
	}
	// fn returning false stops the scan.
	var n int
	eachMember([]byte(`{"a":1,"b":2,"c":3}`), func(string) bool { n++; return n < 2 })
	if n != 2 {
		t.Errorf("scan went on after false: %d calls", n)
	}
}

func TestCheckMemberNames(t *testing.T) {
	allowed := map[string]bool{"a": true, "b": true}
	for raw, want := range map[string]string{
		`{"a":1,"b":{"a":1,"a":2}}`: "",
		`{"a":1,"a":2}`:             "a: given more than once",
		`{"A":1}`:                   "A: unknown field",
		`{"a":1,"c":2}`:             "c: unknown field",
		`{"\u0061":1,"a":2}`:        "a: given more than once",
	} {
		err := checkMemberNames([]byte(raw), allowed, nil)
		got := ""
		if err != nil {
			got = err.(*Error).Message
		}
		if got != want {
			t.Errorf("%s: %q, want %q", raw, got, want)
		}
	}
}

func FuzzEachMember(f *testing.F) {
	for _, c := range memberCases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		if !json.Valid(raw) {
			return // eachMember's input has passed a json.Decoder
		}
		if got, want := scanMembers(raw), tokenMembers(raw); !slices.Equal(got, want) {
			t.Fatalf("%q: eachMember %q, tokenizer %q", raw, got, want)
		}
	})
}
