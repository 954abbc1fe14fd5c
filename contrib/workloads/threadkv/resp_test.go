// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package main

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestReadCommand(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
		err  error // nil, io.EOF, io.ErrUnexpectedEOF or ErrProtocol
	}{
		{name: "INCR as the lab client sends it", in: "*2\r\n$4\r\nINCR\r\n$7\r\ncounter\r\n", want: []string{"INCR", "counter"}},
		{name: "SET", in: "*3\r\n$3\r\nSET\r\n$5\r\nkey:1\r\n$7\r\nvalue:1\r\n", want: []string{"SET", "key:1", "value:1"}},
		{name: "empty bulk string", in: "*2\r\n$3\r\nGET\r\n$0\r\n\r\n", want: []string{"GET", ""}},
		{name: "binary bulk with CRLF inside", in: "*1\r\n$4\r\na\r\nb\r\n", want: []string{"a\r\nb"}},
		{name: "clean end of stream", in: "", err: io.EOF},
		{name: "cut in the header", in: "*2", err: io.ErrUnexpectedEOF},
		{name: "cut after the header", in: "*2\r\n", err: io.ErrUnexpectedEOF},
		{name: "cut inside a bulk string", in: "*1\r\n$4\r\nIN", err: io.ErrUnexpectedEOF},
		{name: "inline command refused", in: "PING\r\n", err: ErrProtocol},
		{name: "LF without CR", in: "*1\n$4\r\nPING\r\n", err: ErrProtocol},
		{name: "empty array", in: "*0\r\n", err: ErrProtocol},
		{name: "negative count", in: "*-1\r\n", err: ErrProtocol},
		{name: "too many elements", in: "*65\r\n", err: ErrProtocol},
		{name: "leading zero", in: "*01\r\n$4\r\nPING\r\n", err: ErrProtocol},
		{name: "sign", in: "*+1\r\n$4\r\nPING\r\n", err: ErrProtocol},
		{name: "bulk over the limit", in: "*1\r\n$524289\r\n", err: ErrProtocol},
		{name: "huge length", in: "*1\r\n$99999999999999999999\r\n", err: ErrProtocol},
		{name: "integer element instead of bulk", in: "*1\r\n:1\r\n", err: ErrProtocol},
		{name: "bulk not terminated", in: "*1\r\n$4\r\nPINGxx", err: ErrProtocol},
		{name: "header line too long", in: "*" + strings.Repeat("1", 100) + "\r\n", err: ErrProtocol},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ReadCommand(bufio.NewReader(strings.NewReader(tc.in)))
			if tc.err == nil {
				if err != nil || !slices.Equal(got, tc.want) {
					t.Fatalf("ReadCommand(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
				}
				return
			}
			if !errors.Is(err, tc.err) {
				t.Fatalf("ReadCommand(%q) = %q, %v; want error %v", tc.in, got, err, tc.err)
			}
		})
	}
}

func TestReadCommandStream(t *testing.T) {
	var in []byte
	in = AppendCommand(in, "INCR", "counter")
	in = AppendCommand(in, "SET", "k", "v")
	r := bufio.NewReader(bytes.NewReader(in))
	for _, want := range [][]string{{"INCR", "counter"}, {"SET", "k", "v"}} {
		got, err := ReadCommand(r)
		if err != nil || !slices.Equal(got, want) {
			t.Fatalf("got %q, %v; want %q", got, err, want)
		}
	}
	if _, err := ReadCommand(r); err != io.EOF {
		t.Fatalf("after the last command: %v, want EOF", err)
	}
}

func TestExec(t *testing.T) {
	s := NewStore()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"PING"}, "+PONG\r\n"},
		{[]string{"ping", "hi"}, "$2\r\nhi\r\n"},
		{[]string{"INCR", "counter"}, ":1\r\n"},
		{[]string{"incr", "counter"}, ":2\r\n"},
		{[]string{"SET", "key:1", "value:1"}, "+OK\r\n"},
		{[]string{"GET", "key:1"}, "$7\r\nvalue:1\r\n"},
		{[]string{"GET", "missing"}, "$-1\r\n"},
		{[]string{"INCR", "key:1"}, "-ERR value is not an integer or out of range\r\n"},
		{[]string{"SET", "big", "9223372036854775807"}, "+OK\r\n"},
		{[]string{"INCR", "big"}, "-ERR value is not an integer or out of range\r\n"},
		{[]string{"DEL", "key:1"}, ":1\r\n"},
		{[]string{"DEL", "key:1"}, ":0\r\n"},
		{[]string{"SET", "k"}, "-ERR wrong number of arguments for 'SET' command\r\n"},
		{[]string{"FLUSHALL\r\n"}, "-ERR unknown command 'FLUSHALL  '\r\n"},
	}
	for _, tc := range tests {
		if got := string(s.Exec(nil, tc.args)); got != tc.want {
			t.Errorf("%q: %q, want %q", tc.args, got, tc.want)
		}
	}
}

// TestServeLikeTheLabClient: a connection driven the way test/lab's
// RedisWorkload drives it, from several connections at once.
func TestServeLikeTheLabClient(t *testing.T) {
	s := NewStore()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	const conns, rounds = 4, 50
	errs := make(chan error, conns)
	for range conns {
		go func() {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			r := bufio.NewReader(c)
			for range rounds {
				if _, err := c.Write(AppendCommand(nil, "INCR", "counter")); err != nil {
					errs <- err
					return
				}
				line, err := r.ReadString('\n')
				if err != nil || !strings.HasPrefix(line, ":") {
					errs <- errors.New("INCR reply " + line)
					return
				}
			}
			errs <- nil
		}()
	}
	for range conns {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if got := string(s.Exec(nil, []string{"GET", "counter"})); got != "$3\r\n200\r\n" {
		t.Fatalf("counter after %d INCRs: %q", conns*rounds, got)
	}
}

// FuzzReadCommand: any bytes from the network give a command or an error,
// never a panic or an allocation beyond the limits; a decoded command
// encodes back to bytes that decode to the same command.
func FuzzReadCommand(f *testing.F) {
	f.Add(AppendCommand(nil, "INCR", "counter"))
	f.Add(AppendCommand(nil, "SET", "key:1", "value:1"))
	f.Add(AppendCommand(nil, "GET", ""))
	f.Add([]byte("*1\r\n$4\r\nPING"))
	f.Add([]byte("*-1\r\n"))
	f.Add([]byte("PING\r\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bufio.NewReader(bytes.NewReader(in))
		for {
			args, err := ReadCommand(r)
			if err != nil {
				if !errors.Is(err, ErrProtocol) && err != io.EOF && err != io.ErrUnexpectedEOF {
					t.Fatalf("unexpected error kind: %v", err)
				}
				return
			}
			if len(args) < 1 || len(args) > maxArgs {
				t.Fatalf("%d args", len(args))
			}
			again, err := ReadCommand(bufio.NewReader(bytes.NewReader(AppendCommand(nil, args...))))
			if err != nil || !slices.Equal(again, args) {
				t.Fatalf("round trip of %q: %q, %v", args, again, err)
			}
			NewStore().Exec(nil, args) // must not panic
		}
	})
}
