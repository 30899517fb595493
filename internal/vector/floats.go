package vector

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// DecodeObject decodes the JSON object b: the member named key (an
// array of arrays of numbers, or null) into *vectors with the parser below,
// every member named in fields into its pointer with encoding/json (matching
// names case-insensitively, as encoding/json does), and any other member is
// checked and skipped. Vectors come out exactly as encoding/json gives
// [][]float32 — every value correctly rounded, as strconv.ParseFloat(s, 32)
// — and a null number is an error, not a 0.
//
// The worker's profile showed decoding Ollama's reply (4096 decimal floats
// per vector) as its largest cost: generic number parsing and reflection
// per float, which this avoids.
func DecodeObject(b []byte, key string, vectors *[][]float32, fields map[string]any) error {
	p := floatParser{b: b}
	p.space()
	if err := p.expect('{'); err != nil {
		return err
	}
	p.space()
	if p.peek() == '}' {
		p.i++
		p.space()
		return p.end()
	}
	for {
		name, err := p.key()
		if err != nil {
			return err
		}
		p.space()
		if err := p.expect(':'); err != nil {
			return err
		}
		p.space()
		if strings.EqualFold(name, key) {
			if *vectors, err = p.vectorRows(); err != nil {
				return err
			}
		} else if err := p.value(field(fields, name)); err != nil {
			return fmt.Errorf("member %q: %w", name, err)
		}
		if more, err := p.next('}', "a member"); err != nil {
			return err
		} else if !more {
			p.space()
			return p.end()
		}
	}
}

func field(fields map[string]any, name string) any {
	if f, ok := fields[name]; ok {
		return f
	}
	for k, f := range fields {
		if strings.EqualFold(k, name) {
			return f
		}
	}
	return new(json.RawMessage)
}

// key reads a member name.
func (p *floatParser) key() (string, error) {
	if p.peek() != '"' {
		return "", p.fail("expected a member name")
	}
	start := p.i
	escaped := false
	for p.i++; p.i < len(p.b); p.i++ {
		switch c := p.b[p.i]; {
		case c == '\\':
			escaped = true
			p.i++
		case c == '"':
			p.i++
			raw := p.b[start:p.i]
			if !escaped && utf8.Valid(raw) {
				return string(raw[1 : len(raw)-1]), nil
			}
			var name string
			if err := json.Unmarshal(raw, &name); err != nil {
				p.i = start
				return "", p.fail("bad member name")
			}
			return name, nil
		case c < 0x20:
			return "", p.fail("control character in a member name")
		}
	}
	return "", p.fail("unterminated member name")
}

// value decodes the JSON value at the cursor into dst with encoding/json.
func (p *floatParser) value(dst any) error {
	dec := json.NewDecoder(bytes.NewReader(p.b[p.i:]))
	if err := dec.Decode(dst); err != nil {
		return err
	}
	p.i += int(dec.InputOffset())
	return nil
}

// vectorRows reads an array of arrays of numbers, or null.
func (p *floatParser) vectorRows() ([][]float32, error) {
	if p.literal("null") {
		return nil, nil
	}
	if err := p.expect('['); err != nil {
		return nil, err
	}
	rows := [][]float32{}
	p.space()
	if p.peek() == ']' {
		p.i++
		return rows, nil
	}
	size := 1024
	for {
		var row []float32
		if !p.literal("null") { // a null row is a nil vector, as encoding/json has it
			var err error
			if row, err = p.row(make([]float32, 0, size)); err != nil {
				return nil, err
			}
			size = max(len(row), 1) // Ollama's rows are all one length
		}
		rows = append(rows, row)
		if more, err := p.next(']', "a vector"); err != nil {
			return nil, err
		} else if !more {
			return rows, nil
		}
	}
}

type floatParser struct {
	b []byte
	i int
}

func (p *floatParser) peek() byte {
	if p.i < len(p.b) {
		return p.b[p.i]
	}
	return 0
}

func (p *floatParser) space() {
	for p.i < len(p.b) {
		switch p.b[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

func (p *floatParser) literal(s string) bool {
	if len(p.b)-p.i >= len(s) && string(p.b[p.i:p.i+len(s)]) == s {
		p.i += len(s)
		return true
	}
	return false
}

func (p *floatParser) expect(c byte) error {
	if p.peek() != c {
		return p.fail(fmt.Sprintf("expected %q", c))
	}
	p.i++
	return nil
}

func (p *floatParser) end() error {
	if p.i != len(p.b) {
		return p.fail("unexpected data after the vectors")
	}
	return nil
}

func (p *floatParser) fail(what string) error {
	if p.i >= len(p.b) {
		return fmt.Errorf("vectors: %s at offset %d (end of input)", what, p.i)
	}
	return fmt.Errorf("vectors: %s at offset %d (%q)", what, p.i, p.b[p.i])
}

// row decodes one array of numbers, appending to dst.
func (p *floatParser) row(dst []float32) ([]float32, error) {
	if err := p.expect('['); err != nil {
		return nil, err
	}
	p.space()
	if p.peek() == ']' {
		p.i++
		return dst, nil
	}
	for {
		f, err := p.number()
		if err != nil {
			return nil, err
		}
		dst = append(dst, f)
		if p.i < len(p.b) && p.b[p.i] == ',' { // the common case: no spaces
			p.i++
			p.space()
			continue
		}
		if more, err := p.next(']', "a number"); err != nil {
			return nil, err
		} else if !more {
			return dst, nil
		}
	}
}

// next reads what follows an element of an array or object: a comma
// (more is true) or the closing byte, with any spaces around.
func (p *floatParser) next(closing byte, after string) (more bool, err error) {
	p.space()
	switch p.peek() {
	case ',':
		p.i++
		p.space()
		return true, nil
	case closing:
		p.i++
		return false, nil
	}
	return false, p.fail(fmt.Sprintf("expected , or %c after %s", closing, after))
}

const nullNumber = "null in place of a number"

// exactPow10 holds the powers of ten a float64 represents exactly.
var exactPow10 = [...]float64{1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9,
	1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22}

// number reads one JSON number (RFC 8259 grammar) and rounds it to the
// nearest float32, ties to even, as strconv.ParseFloat(s, 32) does.
//
// The fast path reads up to 19 significant digits into an integer m and a
// power of ten e. When m < 2^53 and |e| <= 22, m and 10^|e| are exact
// float64s, so one multiplication or division gives x64, the float64 nearest
// to the number (Clinger's fast path, which strconv uses too). Rounding x64
// to float32 then gives the float32 nearest to the number unless x64 lies
// exactly halfway between two float32s: the halfway points are float64s and
// rounding is monotonic, so the number and x64 fall between the same two
// halfway points. That case and numbers outside the fast path's bounds go
// to strconv.
func (p *floatParser) number() (float32, error) {
	b, start := p.b, p.i
	i := start
	neg := i < len(b) && b[i] == '-'
	if neg {
		i++
	}
	var m uint64
	digits, exp := 0, 0 // significant digits in m; power of ten to apply
	inexact := false    // a non-zero digit did not fit in m
	switch {
	case i < len(b) && b[i] == '0':
		i++
	case i < len(b) && '1' <= b[i] && b[i] <= '9':
		end, taken, lost := readDigits(b, i, &m, &digits)
		exp += end - i - taken // digits that did not fit still count
		i, inexact = end, lost
	default:
		p.i = i
		if p.literal("null") {
			// encoding/json leaves a 0 here; no model sends one.
			p.i = i
			return 0, p.fail(nullNumber)
		}
		return 0, p.fail("expected a number")
	}
	if i < len(b) && b[i] == '.' {
		i++
		frac := i
		if m == 0 { // leading zeros are not significant digits
			for i < len(b) && b[i] == '0' {
				i++
			}
			exp -= i - frac
		}
		// Eight digits at a time while they fit in m: an embedding's
		// values have eight or nine significant digits.
		for digits <= 11 && i+8 <= len(b) {
			v, ok := eightDigits(b[i : i+8])
			if !ok {
				break
			}
			m = m*100_000_000 + v
			digits += 8
			exp -= 8
			i += 8
		}
		end, taken, lost := readDigits(b, i, &m, &digits)
		exp -= taken
		i, inexact = end, inexact || lost
		if i == frac {
			p.i = i
			return 0, p.fail("expected a digit after the decimal point")
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		eneg := false
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			eneg = b[i] == '-'
			i++
		}
		if i >= len(b) || b[i] < '0' || b[i] > '9' {
			p.i = i
			return 0, p.fail("expected a digit in the exponent")
		}
		e := 0
		for ; i < len(b) && '0' <= b[i] && b[i] <= '9'; i++ {
			if e < 100_000 {
				e = e*10 + int(b[i]-'0')
			}
		}
		if eneg {
			e = -e
		}
		exp += e
	}
	p.i = i
	if m == 0 && !inexact {
		if neg {
			return float32(math.Copysign(0, -1)), nil
		}
		return 0, nil
	}
	if !inexact && m < 1<<53 && -22 <= exp && exp <= 22 {
		x := float64(m)
		if exp < 0 {
			x /= exactPow10[-exp]
		} else {
			x *= exactPow10[exp]
		}
		// Here 1e-22 <= x < 2^53 * 1e22, inside float32's normal range, so
		// float32 drops the low 29 of float64's 52 mantissa bits; 1000…0
		// there means halfway.
		if math.Float64bits(x)&(1<<29-1) != 1<<28 {
			if neg {
				x = -x
			}
			return float32(x), nil
		}
	}
	f, err := strconv.ParseFloat(string(b[start:i]), 32)
	if err != nil {
		p.i = start
		if errors.Is(err, strconv.ErrRange) {
			return 0, p.fail("number out of float32 range")
		}
		return 0, p.fail("invalid number")
	}
	return float32(f), nil
}

// readDigits reads the digits from b[i] on into m while it holds fewer than
// 19 significant digits. It returns where the digits end, how many went into
// m, and whether a non-zero digit did not fit.
func readDigits(b []byte, i int, m *uint64, digits *int) (end, taken int, lost bool) {
	for ; i < len(b); i++ {
		d := b[i] - '0'
		if d > 9 {
			break
		}
		if *digits < 19 {
			*m = *m*10 + uint64(d)
			*digits++
			taken++
		} else {
			lost = lost || d != 0
		}
	}
	return i, taken, lost
}

// eightDigits reads eight ASCII digits as a number, all at once (the
// SWAR method of simdjson's parse_eight_digits_unrolled); ok is false when
// any of the bytes is not a digit.
func eightDigits(b []byte) (uint64, bool) {
	v := binary.LittleEndian.Uint64(b)
	// Each byte is 0x30..0x39: its high nibble is 3, and adding 6 does not
	// carry into the high nibble.
	if v&0xF0F0F0F0F0F0F0F0 != 0x3030303030303030 ||
		(v+0x0606060606060606)&0xF0F0F0F0F0F0F0F0 != 0x3030303030303030 {
		return 0, false
	}
	v -= 0x3030303030303030
	v = (v*10 + v>>8) & 0x00FF00FF00FF00FF // pairs of digits
	v = (v*100 + v>>16) & 0x0000FFFF0000FFFF
	v = (v*10000 + v>>32) & 0xFFFFFFFF
	return v, true
}
