package oid

import (
	"bytes"
	"encoding"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"

	"vnic/ndis"
)

// givenTwice is the error for an object that names the field at path
// twice.
func givenTwice(path string) *ndis.Error {
	return invalid("field %q given twice: give each field once (field names are matched case-insensitively)", path)
}

// duplicateField reports the first field that an object in data names
// twice, by its path from the top, the way decodeError names fields
// ("SecAssoc.Spi": the fields' own names, whatever case the request used,
// and no array indices). data must be one valid JSON value, as decode
// has read it into a value of type t; keys are matched to t's fields as
// encoding/json matches them (the exact name first, then
// case-insensitively), so two keys that it would store in one field, the
// last one winning, are a duplicate. Keys that are no field of t, and the
// values of types that decode themselves (Key, IPProto, json.RawMessage,
// interfaces such as the id), are not looked into. duplicateField never
// copies a value: data may hold keys.
func duplicateField(data []byte, t reflect.Type) (path string, found bool) {
	w := fieldWalker{data: data}
	return w.value(t)
}

// fieldWalker walks a JSON value along a Go type, looking for a field
// given twice. It expects valid JSON, and on anything else stops without
// a finding (decode reports the error); it always terminates.
type fieldWalker struct {
	data []byte
	pos  int
	path []string // the fields walked into
}

// value walks the value at pos, which decodes into a t (nil: not looked
// into), and leaves pos after it.
func (w *fieldWalker) value(t reflect.Type) (string, bool) {
	w.space()
	if w.pos >= len(w.data) {
		return "", false
	}
	t = walkType(t)
	switch c := w.data[w.pos]; {
	case c == '{' && t != nil && t.Kind() == reflect.Struct:
		return w.object(fieldsOf(t))
	case c == '[' && t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array):
		return w.array(t.Elem())
	}
	w.skip()
	return "", false
}

// object walks an object whose fields are fs.
func (w *fieldWalker) object(fs []field) (string, bool) {
	w.pos++ // {
	seen := make([]bool, len(fs))
	for {
		w.space()
		if w.pos >= len(w.data) {
			return "", false
		}
		switch w.data[w.pos] {
		case '}':
			w.pos++
			return "", false
		case ',':
			w.pos++
			continue
		}
		start := w.pos
		if !w.skipString() {
			return "", false
		}
		key := w.data[start:w.pos]
		w.space()
		if w.pos >= len(w.data) || w.data[w.pos] != ':' {
			return "", false
		}
		w.pos++
		i := lookupField(fs, key)
		if i < 0 {
			w.skip()
			continue
		}
		if seen[i] {
			return strings.Join(append(w.path, fs[i].name), "."), true
		}
		seen[i] = true
		w.path = append(w.path, fs[i].name)
		if p, ok := w.value(fs[i].typ); ok {
			return p, ok
		}
		w.path = w.path[:len(w.path)-1]
	}
}

// array walks an array whose elements decode into elem.
func (w *fieldWalker) array(elem reflect.Type) (string, bool) {
	w.pos++ // [
	for {
		w.space()
		if w.pos >= len(w.data) {
			return "", false
		}
		switch w.data[w.pos] {
		case ']':
			w.pos++
			return "", false
		case ',':
			w.pos++
			continue
		}
		if p, ok := w.value(elem); ok {
			return p, ok
		}
	}
}

// skip moves pos past the value there, without looking into it. It
// always moves pos forward.
func (w *fieldWalker) skip() {
	w.space()
	if w.pos >= len(w.data) {
		return
	}
	switch w.data[w.pos] {
	case '"':
		if !w.skipString() {
			w.pos = len(w.data)
		}
	case '{', '[':
		depth := 0
		for w.pos < len(w.data) {
			switch w.data[w.pos] {
			case '"':
				if !w.skipString() {
					w.pos = len(w.data)
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					w.pos++
					return
				}
			}
			w.pos++
		}
	default: // a number, true, false or null
		start := w.pos
		for w.pos < len(w.data) && !isDelimiter(w.data[w.pos]) {
			w.pos++
		}
		if w.pos == start {
			w.pos++ // not JSON: move on all the same
		}
	}
}

// skipString moves pos past the string there; it reports false, with pos
// unchanged, when there is no string there.
func (w *fieldWalker) skipString() bool {
	if w.pos >= len(w.data) || w.data[w.pos] != '"' {
		return false
	}
	for i := w.pos + 1; i < len(w.data); i++ {
		switch w.data[i] {
		case '\\':
			i++
		case '"':
			w.pos = i + 1
			return true
		}
	}
	return false
}

func (w *fieldWalker) space() {
	for w.pos < len(w.data) {
		switch w.data[w.pos] {
		case ' ', '\t', '\n', '\r':
			w.pos++
		default:
			return
		}
	}
}

func isDelimiter(c byte) bool {
	switch c {
	case ',', ':', '{', '}', '[', ']', '"', ' ', '\t', '\n', '\r':
		return true
	}
	return false
}

// lookupField returns the index in fs of the field that encoding/json
// stores the key (a JSON string, quotes included) in, or -1.
func lookupField(fs []field, quoted []byte) int {
	name := quoted[1 : len(quoted)-1]
	if bytes.IndexByte(name, '\\') >= 0 || !isASCII(name) {
		var s string
		if json.Unmarshal(quoted, &s) != nil {
			return -1
		}
		name = []byte(s)
	}
	for i := range fs {
		if string(name) == fs[i].name {
			return i
		}
	}
	for i := range fs {
		if bytes.EqualFold(name, []byte(fs[i].name)) {
			return i
		}
	}
	return -1
}

func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}

// field is a field of a struct as encoding/json sees it: its JSON name
// and its type.
type field struct {
	name string
	typ  reflect.Type
}

var (
	unmarshalerType     = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// walkType returns the type whose fields a JSON value decoding into a t
// goes to, pointers followed, or nil when the walk does not look into
// it: t is nil, an interface, a map or a type that decodes itself.
func walkType(t reflect.Type) reflect.Type {
	for t != nil {
		if t.Implements(unmarshalerType) || t.Implements(textUnmarshalerType) {
			return nil
		}
		if t.Kind() != reflect.Pointer {
			if reflect.PointerTo(t).Implements(unmarshalerType) || reflect.PointerTo(t).Implements(textUnmarshalerType) {
				return nil
			}
			break
		}
		t = t.Elem()
	}
	if t == nil || t.Kind() == reflect.Interface || t.Kind() == reflect.Map {
		return nil
	}
	return t
}

// fieldCache holds fieldsOf's results by type.
var fieldCache sync.Map // reflect.Type → []field

// fieldsOf returns the fields of struct type t as encoding/json decodes
// them: the exported fields by their JSON names, with the fields of
// embedded structs promoted, a shallower field hiding a deeper one of the
// same name. (encoding/json also drops two fields of the same name and
// depth; the request types have none.)
func fieldsOf(t reflect.Type) []field {
	if fs, ok := fieldCache.Load(t); ok {
		return fs.([]field)
	}
	var fs []field
	names := map[string]bool{}
	visited := map[reflect.Type]bool{}
	for level := []reflect.Type{t}; len(level) > 0; {
		var next []reflect.Type
		for _, st := range level {
			if visited[st] {
				continue
			}
			visited[st] = true
			for i := range st.NumField() {
				sf := st.Field(i)
				tag := sf.Tag.Get("json")
				if tag == "-" {
					continue
				}
				name, _, _ := strings.Cut(tag, ",")
				if sf.Anonymous {
					ft := sf.Type
					if ft.Kind() == reflect.Pointer {
						ft = ft.Elem()
					}
					if name == "" && ft.Kind() == reflect.Struct {
						next = append(next, ft)
						continue
					}
					if !sf.IsExported() {
						continue
					}
				} else if !sf.IsExported() {
					continue
				}
				if name == "" {
					name = sf.Name
				}
				if !names[name] {
					names[name] = true
					fs = append(fs, field{name: name, typ: sf.Type})
				}
			}
		}
		level = next
	}
	fieldCache.Store(t, fs)
	return fs
}

// numberWords says, for an error, what the JSON number lit (as written)
// is when a field of integer type t cannot hold it: the number, with why
// when the range in typeWords does not say it ("1.5 (not a whole
// number)"). A number holding a run of 16 or more digits is described,
// not shown, as quote describes such strings.
func numberWords(lit string, t reflect.Type) string {
	if LooksLikeKey(lit) {
		return fmt.Sprintf("a number of %d characters (not shown: it may hold a key)", len(lit))
	}
	n, ok := parseNumber(lit)
	if !ok { // not reached: encoding/json has checked the syntax
		return lit
	}
	signed := false
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		signed = true
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
	default:
		return lit
	}
	switch {
	case n.neg && !n.zero() && !signed:
		return lit // below the range typeWords gives
	case !n.whole() && signed:
		return lit // typeWords says "a whole number"
	case !n.whole():
		return lit + " (not a whole number)"
	}
	plain, fits := n.integer(), false
	if plain != "" {
		if signed {
			v, err := strconv.ParseInt(plain, 10, 64)
			fits = err == nil && !reflect.Zero(t).OverflowInt(v)
		} else {
			v, err := strconv.ParseUint(plain, 10, 64)
			fits = err == nil && !reflect.Zero(t).OverflowUint(v)
		}
	}
	switch {
	case !fits && signed && n.neg:
		return lit + " (too small)"
	case !fits && signed:
		return lit + " (too large)"
	case !fits:
		return lit
	case n.exp:
		return fmt.Sprintf("%s (write whole numbers without an exponent, like %s)", lit, plain)
	case n.point:
		return fmt.Sprintf("%s (write whole numbers without a decimal point, like %s)", lit, plain)
	case n.neg && n.zero(): // -0, for an unsigned field
		return fmt.Sprintf("%s (write %s without a minus sign)", lit, plain)
	}
	return lit // not reached: encoding/json takes a plain number that fits
}

// jsonNumber is a JSON number, taken apart: its value is digits ×
// 10^scale, negative when neg.
type jsonNumber struct {
	neg        bool
	digits     string // without leading or trailing zeros; "" for 0
	scale      int    // clamped to ±1<<20: past that only its sign matters
	point, exp bool   // written with a fraction or an exponent
}

// parseNumber takes a JSON number apart.
func parseNumber(lit string) (jsonNumber, bool) {
	var n jsonNumber
	s := lit
	if strings.HasPrefix(s, "-") {
		n.neg, s = true, s[1:]
	}
	intEnd := strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' })
	if intEnd < 0 {
		intEnd = len(s)
	}
	intPart, frac := s[:intEnd], ""
	s = s[intEnd:]
	if intPart == "" {
		return n, false
	}
	if strings.HasPrefix(s, ".") {
		n.point = true
		end := strings.IndexFunc(s[1:], func(r rune) bool { return r < '0' || r > '9' })
		if end < 0 {
			end = len(s) - 1
		}
		frac, s = s[1:1+end], s[1+end:]
	}
	exp := 0
	if s != "" {
		if s[0] != 'e' && s[0] != 'E' {
			return n, false
		}
		n.exp = true
		e := strings.TrimPrefix(s[1:], "+")
		v, err := strconv.Atoi(e)
		if err != nil {
			if e == "" || strings.Trim(strings.TrimPrefix(e, "-"), "0123456789") != "" {
				return n, false
			}
			v = 1 << 30 // out of int range: only its sign matters
			if strings.HasPrefix(e, "-") {
				v = -v
			}
		}
		exp = max(-1<<30, min(v, 1<<30))
	}
	digits := strings.TrimLeft(intPart+frac, "0")
	scale := exp - len(frac)
	trimmed := strings.TrimRight(digits, "0")
	scale += len(digits) - len(trimmed)
	n.digits = trimmed
	n.scale = max(-1<<20, min(scale, 1<<20))
	return n, true
}

func (n jsonNumber) zero() bool { return n.digits == "" }

func (n jsonNumber) whole() bool { return n.zero() || n.scale >= 0 }

// integer writes a whole number in plain decimal, or returns "" when it
// is not whole or has more than 20 digits (more than any integer type
// holds).
func (n jsonNumber) integer() string {
	if n.zero() {
		return "0"
	}
	if n.scale < 0 || len(n.digits)+n.scale > 20 {
		return ""
	}
	s := n.digits + strings.Repeat("0", n.scale)
	if n.neg {
		s = "-" + s
	}
	return s
}
