// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Limits of the decoder: what a client may make the server allocate.
const (
	maxArgs    = 64        // elements of one command array
	maxBulkLen = 512 << 10 // bytes of one bulk string
	maxLineLen = 64        // bytes of a header line ("*N", "$N") without CRLF
)

// ErrProtocol is a malformed request; the server answers with an error
// and closes the connection (it cannot resynchronise on a byte stream).
var ErrProtocol = errors.New("protocol error")

// ReadCommand reads one request: a RESP array of bulk strings
// ("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"), which is what Redis clients send.
// io.EOF is returned only when the stream ends cleanly before a request;
// a request cut short is io.ErrUnexpectedEOF.
func ReadCommand(r *bufio.Reader) ([]string, error) {
	line, err := readLine(r)
	if err != nil {
		return nil, err
	}
	n, err := header(line, '*', maxArgs)
	if err != nil {
		return nil, err
	}
	if n < 1 {
		return nil, fmt.Errorf("%w: empty command", ErrProtocol)
	}
	args := make([]string, 0, n)
	for range n {
		line, err := readLine(r)
		if err != nil {
			return nil, eof(err)
		}
		size, err := header(line, '$', maxBulkLen)
		if err != nil {
			return nil, err
		}
		buf := make([]byte, size+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return nil, eof(err)
		}
		if buf[size] != '\r' || buf[size+1] != '\n' {
			return nil, fmt.Errorf("%w: bulk string not terminated by CRLF", ErrProtocol)
		}
		args = append(args, string(buf[:size]))
	}
	return args, nil
}

// eof turns an EOF inside a request into io.ErrUnexpectedEOF.
func eof(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// readLine reads a header line and strips its CRLF; a line longer than
// maxLineLen or without CR before LF is a protocol error.
func readLine(r *bufio.Reader) (string, error) {
	var b []byte
	for {
		c, err := r.ReadByte()
		if err != nil {
			if err == io.EOF && len(b) > 0 {
				return "", io.ErrUnexpectedEOF
			}
			return "", err
		}
		if c == '\n' {
			break
		}
		if len(b) > maxLineLen {
			return "", fmt.Errorf("%w: header line too long", ErrProtocol)
		}
		b = append(b, c)
	}
	if len(b) == 0 || b[len(b)-1] != '\r' {
		return "", fmt.Errorf("%w: line not terminated by CRLF", ErrProtocol)
	}
	return string(b[:len(b)-1]), nil
}

// header parses "<kind><decimal>" with 0 <= decimal <= limit.
func header(line string, kind byte, limit int) (int, error) {
	if len(line) < 2 || line[0] != kind {
		return 0, fmt.Errorf("%w: expected '%c', got %q", ErrProtocol, kind, line)
	}
	digits := line[1:]
	for i := 0; i < len(digits); i++ {
		if digits[i] < '0' || digits[i] > '9' {
			return 0, fmt.Errorf("%w: bad length %q", ErrProtocol, line)
		}
	}
	if len(digits) > 1 && digits[0] == '0' {
		return 0, fmt.Errorf("%w: bad length %q", ErrProtocol, line)
	}
	n, err := strconv.Atoi(digits)
	if err != nil || n > limit {
		return 0, fmt.Errorf("%w: length %q over the limit %d", ErrProtocol, line, limit)
	}
	return n, nil
}

// AppendCommand encodes args as a RESP array of bulk strings.
func AppendCommand(dst []byte, args ...string) []byte {
	dst = append(dst, '*')
	dst = strconv.AppendInt(dst, int64(len(args)), 10)
	dst = append(dst, "\r\n"...)
	for _, a := range args {
		dst = append(dst, '$')
		dst = strconv.AppendInt(dst, int64(len(a)), 10)
		dst = append(dst, "\r\n"...)
		dst = append(dst, a...)
		dst = append(dst, "\r\n"...)
	}
	return dst
}

// Replies.

func appendSimple(dst []byte, s string) []byte {
	return append(append(append(dst, '+'), s...), "\r\n"...)
}

func appendError(dst []byte, s string) []byte {
	// An error line must not contain CR or LF.
	s = strings.NewReplacer("\r", " ", "\n", " ").Replace(s)
	return append(append(append(dst, '-'), s...), "\r\n"...)
}

func appendInt(dst []byte, n int64) []byte {
	return append(strconv.AppendInt(append(dst, ':'), n, 10), "\r\n"...)
}

func appendBulk(dst []byte, s string, ok bool) []byte {
	if !ok {
		return append(dst, "$-1\r\n"...)
	}
	dst = strconv.AppendInt(append(dst, '$'), int64(len(s)), 10)
	return append(append(append(dst, "\r\n"...), s...), "\r\n"...)
}
