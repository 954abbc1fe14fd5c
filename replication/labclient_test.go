package replication_test

import (
	"bufio"
	"fmt"
	"net"
	"os"
	goruntime "runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// dialInNetns opens a TCP connection from inside the network namespace at
// nsPath: a socket belongs to the namespace it was created in, so only
// socket() and connect() need the thread switched.
func dialInNetns(nsPath, addr string) (net.Conn, error) {
	goruntime.LockOSThread()
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		goruntime.UnlockOSThread()
		return nil, err
	}
	defer orig.Close()
	target, err := os.Open(nsPath)
	if err != nil {
		goruntime.UnlockOSThread()
		return nil, err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		goruntime.UnlockOSThread()
		return nil, fmt.Errorf("setns %s: %w", nsPath, err)
	}
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if serr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); serr == nil {
		goruntime.UnlockOSThread()
	} // else: the thread stays locked and exits with the goroutine
	return conn, err
}

// redisConn speaks just enough RESP over one connection.
type redisConn struct {
	c net.Conn
	r *bufio.Reader
}

func newRedisConn(c net.Conn) *redisConn { return &redisConn{c: c, r: bufio.NewReader(c)} }

// do sends one command and returns the reply line (the body for a bulk
// string, "$-1" for nil).
func (r *redisConn) do(args ...string) (string, error) {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	r.c.SetDeadline(time.Now().Add(15 * time.Second))
	if _, err := r.c.Write([]byte(b.String())); err != nil {
		return "", err
	}
	line, err := r.r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	if strings.HasPrefix(line, "$") && line != "$-1" {
		body, err := r.r.ReadString('\n')
		return strings.TrimRight(body, "\r\n"), err
	}
	return line, nil
}
