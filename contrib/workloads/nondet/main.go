// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

// Command nondet is a deliberately nondeterministic line-protocol server,
// the workload of the hybrid-mode tests (docs/HYBRID.md): a failover there
// replays the logged inputs into the restored checkpoint and compares every
// reply with the one the clients may already have. Some commands answer the
// same way in every run, so a replay reproduces them; others carry the time
// or random bytes, so a replay contradicts what was sent and the connection
// must be reset.
//
// One request per line, one reply line per request, in order:
//
//	INCR       COUNT n     n = 1, 2, 3, … per connection (deterministic)
//	ECHO x     ECHO x      (deterministic)
//	TIME       TIME ns     the server's clock, Unix nanoseconds (nondeterministic)
//	RAND n     RAND hex    n random bytes (1 ≤ n ≤ 1024), hex (nondeterministic)
//	QUIT       BYE         and the server closes the connection
//	other      ERR message
//
//	nondet [-addr :7000]
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"log"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// maxLine bounds a request line: a longer one is a protocol error, not a
// reason to grow a buffer without end.
const maxLine = 4096

// maxRand bounds RAND's argument.
const maxRand = 1024

// conn is one connection's state: its counter is its own, so that the
// deterministic replies depend on that connection's inputs only.
type conn struct {
	count uint64
	now   func() time.Time
}

// reply answers one request line (without its newline).
func (c *conn) reply(line string) (out string, quit bool) {
	cmd, arg, _ := strings.Cut(strings.TrimRight(line, "\r"), " ")
	switch strings.ToUpper(cmd) {
	case "INCR":
		c.count++
		return "COUNT " + strconv.FormatUint(c.count, 10), false
	case "ECHO":
		return "ECHO " + arg, false
	case "TIME":
		return "TIME " + strconv.FormatInt(c.now().UnixNano(), 10), false
	case "RAND":
		n, err := strconv.Atoi(arg)
		if err != nil || n < 1 || n > maxRand {
			return "ERR RAND wants a byte count from 1 to " + strconv.Itoa(maxRand), false
		}
		b := make([]byte, n)
		if _, err := rand.Read(b); err != nil {
			return "ERR " + err.Error(), false
		}
		return "RAND " + hex.EncodeToString(b), false
	case "QUIT":
		return "BYE", true
	default:
		return "ERR unknown command " + strconv.Quote(cmd), false
	}
}

// serve answers c's requests in order until it closes or errs.
func serve(c net.Conn) {
	defer c.Close()
	st := &conn{now: time.Now}
	r := bufio.NewReaderSize(c, maxLine)
	w := bufio.NewWriter(c)
	for {
		line, err := r.ReadSlice('\n')
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				// Best effort: the connection is closed next either way.
				_, _ = w.WriteString("ERR line too long\n")
				_ = w.Flush()
			}
			return
		}
		out, quit := st.reply(string(line[:len(line)-1]))
		// A bufio.Writer's error is sticky: Flush reports it.
		_, _ = w.WriteString(out)
		_ = w.WriteByte('\n')
		// One flush per batch of pipelined requests: a reply waits only
		// while more requests are already buffered.
		if r.Buffered() == 0 || quit {
			if err := w.Flush(); err != nil {
				return
			}
		}
		if quit {
			return
		}
	}
}

func main() {
	addr := flag.String("addr", ":7000", "listen address")
	flag.Parse()
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	// Go's default listener is MPTCP where the kernel allows it; io.rrc.v1
	// turns MPTCP off in a replicated container's namespace (see threadkv).
	var lc net.ListenConfig
	ln, err := lc.Listen(context.Background(), "tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	log.Printf("nondet listening on %s", ln.Addr())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		os.Exit(0)
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			log.Printf("accept: %v", err)
			time.Sleep(10 * time.Millisecond)
			continue
		}
		go serve(c)
	}
}
