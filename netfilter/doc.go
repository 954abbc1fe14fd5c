// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

// Package netfilter is the packet side of replication, on nfnetlink_queue
// spoken over raw netlink (no cgo, no libnetfilter_queue):
//
//   - Queue: a NETLINK_NETFILTER socket opened in a given network namespace,
//     bound to one queue number; reads packets in batches, sends verdicts,
//     one per packet or one per batch (NFQNL_MSG_VERDICT_BATCH).
//   - OutputGate: holds the container's outbound packets, tagged with the
//     epoch that produced them, until that epoch is committed (Release), or
//     passes them through in degraded mode (ReleaseAll).
//   - InputHold: holds inbound packets while the container is frozen and
//     delivers them after the thaw, instead of CRIU's dropping network lock.
//   - Rules and HostOutputRules: the iptables rules (mangle table, dedicated
//     chains, never --queue-bypass) that feed the queues, installed and
//     removed idempotently.
//
// Everything fails closed: packets waiting in a queue whose socket closes
// are dropped by the kernel, packets for a queue nobody has bound are
// dropped, a full queue drops, and fail-open is never set. TCP retransmits.
// See docs/NETFILTER.md.
package netfilter
