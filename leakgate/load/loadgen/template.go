package main

import (
	"errors"
	"fmt"
	"math"
	"math/rand"
	"strconv"
	"strings"
	"sync/atomic"
)

type segKind uint8

const (
	segLit segKind = iota
	segSeq
	segRand
	segUUID
)

type segment struct {
	kind   segKind
	lit    string
	lo, hi int64 // segRand
}

// tmpl is a string pre-parsed into literal and template segments.
type tmpl struct {
	segs    []segment
	lit     string // the whole value when !dynamic
	dynamic bool
}

func parseTemplate(s string) (tmpl, error) {
	var t tmpl
	var lit []byte
	flush := func() {
		if len(lit) > 0 {
			t.segs = append(t.segs, segment{kind: segLit, lit: string(lit)})
			lit = lit[:0]
		}
	}
	for i := 0; i < len(s); {
		if s[i] != '{' {
			lit = append(lit, s[i])
			i++
			continue
		}
		if i+1 < len(s) && s[i+1] == '{' {
			lit = append(lit, '{')
			i += 2
			continue
		}
		if i+1 == len(s) || !isLetter(s[i+1]) {
			// Not a template (JSON bodies: {"id": {seq}}): a literal {.
			lit = append(lit, '{')
			i++
			continue
		}
		j := strings.IndexByte(s[i:], '}')
		if j < 0 {
			return t, fmt.Errorf("unterminated template %q (write {{ for a literal {)", s[i:])
		}
		seg, err := parseDirective(s[i+1 : i+j])
		if err != nil {
			return t, fmt.Errorf("invalid template %q: %v", s[i:i+j+1], err)
		}
		flush()
		t.segs = append(t.segs, seg)
		t.dynamic = true
		i += j + 1
	}
	flush()
	if !t.dynamic {
		for _, sg := range t.segs {
			t.lit += sg.lit
		}
	}
	return t, nil
}

func isLetter(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }

func parseDirective(d string) (segment, error) {
	switch {
	case d == "seq":
		return segment{kind: segSeq}, nil
	case d == "uuid":
		return segment{kind: segUUID}, nil
	case strings.HasPrefix(d, "rand:"):
		a, b, ok := strings.Cut(d[len("rand:"):], "-")
		if !ok {
			return segment{}, errors.New("want {rand:A-B}")
		}
		lo, err1 := parseNonNeg(a)
		hi, err2 := parseNonNeg(b)
		if err1 != nil || err2 != nil {
			return segment{}, errors.New("want {rand:A-B} with integers 0 <= A <= B")
		}
		if lo > hi {
			return segment{}, errors.New("lower bound greater than upper bound")
		}
		if hi-lo == math.MaxInt64 {
			return segment{}, errors.New("range too large")
		}
		return segment{kind: segRand, lo: lo, hi: hi}, nil
	}
	return segment{}, errors.New("unknown template (known: {seq}, {rand:A-B}, {uuid}; write {{ for a literal {)")
}

func parseNonNeg(s string) (int64, error) {
	if s == "" {
		return 0, errors.New("empty")
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, errors.New("not a digit")
		}
	}
	return strconv.ParseInt(s, 10, 64)
}

// expander expands templates for one worker, one request at a time.
type expander struct {
	rng    *rand.Rand
	seqSrc *atomic.Uint64
	seq    uint64 // this request's {seq}; 0 = not drawn yet
}

const hexDigits = "0123456789abcdef"

func (x *expander) appendTo(dst []byte, t *tmpl) []byte {
	if !t.dynamic {
		return append(dst, t.lit...)
	}
	for i := range t.segs {
		sg := &t.segs[i]
		switch sg.kind {
		case segLit:
			dst = append(dst, sg.lit...)
		case segSeq:
			if x.seq == 0 {
				x.seq = x.seqSrc.Add(1)
			}
			dst = strconv.AppendUint(dst, x.seq, 10)
		case segRand:
			dst = strconv.AppendInt(dst, sg.lo+x.rng.Int63n(sg.hi-sg.lo+1), 10)
		case segUUID:
			var b [16]byte
			hi, lo := x.rng.Uint64(), x.rng.Uint64()
			for k := 0; k < 8; k++ {
				b[k], b[8+k] = byte(hi>>(8*k)), byte(lo>>(8*k))
			}
			b[6] = b[6]&0x0f | 0x40 // version 4
			b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
			for k, c := range b {
				if k == 4 || k == 6 || k == 8 || k == 10 {
					dst = append(dst, '-')
				}
				dst = append(dst, hexDigits[c>>4], hexDigits[c&15])
			}
		}
	}
	return dst
}
