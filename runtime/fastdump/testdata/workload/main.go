// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

// Command workload is the fast path's test subject: it keeps several threads
// busy with floating-point work and system calls, so that a stop finds them
// in user mode and in the kernel with live FPU state, and writes into memory
// it allocated once, so that its mappings stay as they are. With -listen it
// also accepts TCP connections, never reads from them and writes 8 MB (or
// -write bytes) to each, so that both queues of each hold data; with -pipe
// it holds a pipe with bytes in it; with -epoll it keeps changing an epoll
// registration; with -file it keeps writing to a file. It never exits.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"runtime"
	"syscall"
	"time"
)

func main() {
	listen := flag.String("listen", "", "TCP address to accept connections on; its port is printed")
	write := flag.Int("write", 8<<20, "bytes written to each connection accepted")
	piped := flag.Int("pipe", 0, "bytes left unread in a pipe it holds both ends of")
	epoll := flag.Bool("epoll", false, "keep changing how an epoll instance of its own watches a pipe")
	file := flag.String("file", "", "a file it keeps writing to, a byte a millisecond")
	flag.Parse()
	if *file != "" {
		f, err := os.OpenFile(*file, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		go func() {
			for {
				if _, err := f.Write([]byte{'x'}); err != nil {
					os.Exit(1)
				}
				time.Sleep(time.Millisecond)
			}
		}()
	}
	if *epoll {
		go changeEpoll()
	}
	if *piped > 0 {
		r, w, err := os.Pipe()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if _, err := w.Write(make([]byte, *piped)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		defer runtime.KeepAlive(r)
		defer runtime.KeepAlive(w)
	}
	if *listen != "" {
		var lc net.ListenConfig
		lc.SetMultipathTCP(false) // CRIU cannot dump MPTCP sockets
		l, err := lc.Listen(context.Background(), "tcp4", *listen)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(l.Addr().(*net.TCPAddr).Port)
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go c.Write(make([]byte, *write)) // blocks once the peer's window is shut
			}
		}()
	}
	mem := make([]byte, 16<<20)
	for i := range mem {
		mem[i] = byte(i)
	}
	go func() {
		for n := 0; ; n++ {
			mem[(n*7919*4096+n)%len(mem)]++
			if n%64 == 0 {
				time.Sleep(time.Millisecond)
			}
		}
	}()
	for i := 0; i < 4; i++ {
		go func(i int) {
			runtime.LockOSThread()
			x := float64(i) + 0.5
			for n := 0; ; n++ {
				x = x*1.0000001 + 0.25
				if n%100000 == 0 {
					time.Sleep(time.Millisecond)
				}
			}
		}(i)
	}
	select {}
}

// changeEpoll registers a pipe's read end with an epoll instance and
// changes the registration's events and data every millisecond.
func changeEpoll() {
	ep, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN}
	if err := syscall.EpollCtl(ep, syscall.EPOLL_CTL_ADD, p[0], &ev); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for n := int32(1); ; n++ {
		ev.Events, ev.Fd = syscall.EPOLLIN, n
		if n%2 == 0 {
			ev.Events |= syscall.EPOLLPRI
		}
		if err := syscall.EpollCtl(ep, syscall.EPOLL_CTL_MOD, p[0], &ev); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		time.Sleep(time.Millisecond)
	}
}
