// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package criuimage

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"

	"google.golang.org/protobuf/encoding/protowire"
)

// TCPConn is a connected TCP socket of a dump (files.img): its own and its
// peer's address.
type TCPConn struct {
	Local, Remote netip.AddrPort
	State         uint32 // TCP_ESTABLISHED = 1, ...
}

// Field numbers of CRIU's images (images/fdinfo.proto file_entry,
// images/sk-inet.proto inet_sk_entry).
const (
	fileEntryISK   = 4 // file_entry.isk
	iskFamily      = 3
	iskProto       = 5
	iskState       = 6
	iskSrcPort     = 7
	iskDstPort     = 8
	iskSrcAddr     = 11 // repeated uint32, network byte order words
	iskDstAddr     = 12
	ipprotoTCP     = 6
	afInet         = 2
	afInet6        = 10
	maxFilesImage  = 64 << 20
	maxFilesRecord = 1 << 20
)

// ReadTCPConns lists the connected TCP sockets (any state but LISTEN and
// CLOSE) in the dump in dir.
func ReadTCPConns(dir string) ([]TCPConn, error) {
	b, err := os.ReadFile(filepath.Join(dir, "files.img"))
	if err != nil {
		return nil, err
	}
	conns, err := DecodeTCPConns(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "files.img"), err)
	}
	return conns, nil
}

// DecodeTCPConns decodes files.img and keeps its connected TCP sockets.
func DecodeTCPConns(b []byte) ([]TCPConn, error) {
	if len(b) > maxFilesImage {
		return nil, fmt.Errorf("files image: more than %d bytes", maxFilesImage)
	}
	if len(b) < 8 || binary.LittleEndian.Uint32(b) != imgCommonMagic {
		return nil, fmt.Errorf("files image: no CRIU image magic")
	}
	b = b[8:]
	var conns []TCPConn
	for len(b) > 0 {
		if len(b) < 4 {
			return nil, fmt.Errorf("files image: %d stray bytes", len(b))
		}
		n := binary.LittleEndian.Uint32(b)
		if n > maxFilesRecord || int(n) > len(b)-4 {
			return nil, fmt.Errorf("files image: record of %d bytes, %d left", n, len(b)-4)
		}
		rec := b[4 : 4+n]
		b = b[4+n:]
		isk, err := bytesField(rec, fileEntryISK)
		if err != nil {
			return nil, fmt.Errorf("files image: %w", err)
		}
		if isk == nil {
			continue
		}
		c, ok, err := decodeInetSk(isk)
		if err != nil {
			return nil, fmt.Errorf("files image: inet socket: %w", err)
		}
		if ok {
			conns = append(conns, c)
		}
	}
	return conns, nil
}

// bytesField returns the bytes of the length-delimited field num of msg (nil if
// absent).
func bytesField(msg []byte, num protowire.Number) ([]byte, error) {
	var out []byte
	for len(msg) > 0 {
		n, typ, l := protowire.ConsumeTag(msg)
		if l < 0 {
			return nil, protowire.ParseError(l)
		}
		msg = msg[l:]
		if n == num && typ == protowire.BytesType {
			v, l := protowire.ConsumeBytes(msg)
			if l < 0 {
				return nil, protowire.ParseError(l)
			}
			out = v
			msg = msg[l:]
			continue
		}
		l = protowire.ConsumeFieldValue(n, typ, msg)
		if l < 0 {
			return nil, protowire.ParseError(l)
		}
		msg = msg[l:]
	}
	return out, nil
}

func decodeInetSk(msg []byte) (TCPConn, bool, error) {
	var family, proto, state, sport, dport uint64
	var src, dst []uint32
	for len(msg) > 0 {
		n, typ, l := protowire.ConsumeTag(msg)
		if l < 0 {
			return TCPConn{}, false, protowire.ParseError(l)
		}
		msg = msg[l:]
		switch {
		case typ == protowire.VarintType:
			v, l := protowire.ConsumeVarint(msg)
			if l < 0 {
				return TCPConn{}, false, protowire.ParseError(l)
			}
			msg = msg[l:]
			switch n {
			case iskFamily:
				family = v
			case iskProto:
				proto = v
			case iskState:
				state = v
			case iskSrcPort:
				sport = v
			case iskDstPort:
				dport = v
			case iskSrcAddr:
				src = append(src, uint32(v))
			case iskDstAddr:
				dst = append(dst, uint32(v))
			}
		case typ == protowire.BytesType && (n == iskSrcAddr || n == iskDstAddr):
			v, l := protowire.ConsumeBytes(msg) // packed
			if l < 0 {
				return TCPConn{}, false, protowire.ParseError(l)
			}
			msg = msg[l:]
			for len(v) > 0 {
				w, l := protowire.ConsumeVarint(v)
				if l < 0 {
					return TCPConn{}, false, protowire.ParseError(l)
				}
				v = v[l:]
				if n == iskSrcAddr {
					src = append(src, uint32(w))
				} else {
					dst = append(dst, uint32(w))
				}
			}
		default:
			l := protowire.ConsumeFieldValue(n, typ, msg)
			if l < 0 {
				return TCPConn{}, false, protowire.ParseError(l)
			}
			msg = msg[l:]
		}
	}
	const tcpClose, tcpListen = 7, 10
	if proto != ipprotoTCP || state == tcpClose || state == tcpListen || dport == 0 {
		return TCPConn{}, false, nil
	}
	la, ok1 := ipFromWords(family, src)
	ra, ok2 := ipFromWords(family, dst)
	if !ok1 || !ok2 || sport > 0xffff || dport > 0xffff {
		return TCPConn{}, false, nil
	}
	return TCPConn{Local: netip.AddrPortFrom(la, uint16(sport)), Remote: netip.AddrPortFrom(ra, uint16(dport)), State: uint32(state)}, true, nil
}

// ipFromWords: CRIU stores addresses as uint32 words in network byte order
// (the in-memory words, little-endian on this machine's CRIU).
func ipFromWords(family uint64, w []uint32) (netip.Addr, bool) {
	var b [16]byte
	for i, x := range w {
		if i >= 4 {
			break
		}
		binary.LittleEndian.PutUint32(b[4*i:], x)
	}
	switch {
	case family == afInet && len(w) >= 1:
		return netip.AddrFrom4([4]byte(b[:4])), true
	case family == afInet6 && len(w) == 4:
		return netip.AddrFrom16(b).Unmap(), true
	}
	return netip.Addr{}, false
}
