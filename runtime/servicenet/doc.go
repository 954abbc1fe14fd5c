// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

// Package servicenet gives a replicated container the network identity it
// keeps across a failover: a network namespace with a service interface
// (eth0) that carries the same IP address and the same MAC address on the
// primary and on the backup host.
//
// On the primary the interface is up. On the backup it is configured but
// down (standby), so that the backup's copy never answers ARP or packets for
// the service address; Promote brings it up and announces it with
// gratuitous ARP so that the LAN's switches learn the new port at once.
//
// Create makes the namespace (bind-mounted under a directory the caller
// chooses, for the OCI spec's linux.namespaces network entry) and the
// interface: a macvlan on the host link, or a veth pair whose host end is
// enslaved when the host link is a bridge. Adopt applies the same standby
// rule to a namespace someone else made (CNI, nerdctl). Remove and
// CleanupStale take everything away again (invariant 6 of
// docs/ARCHITECTURE.md).
//
// Every function may be called from any goroutine. Netlink sockets are bound
// to a namespace (netlink.NewHandleAt); the few operations that need setns
// (unshare, opening the packet socket) run on a locked OS thread that is put
// back in its namespace before it is unlocked, and stays locked (so the
// runtime retires it) if that fails. See docs/SERVICE-NETWORK.md.
package servicenet
