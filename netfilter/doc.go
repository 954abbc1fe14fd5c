// Package netfilter is the packet side of replication: the NFQUEUE output
// gate and input capture on nfnetlink_queue, and the iptables rules that feed
// them, installed and removed idempotently. It fails closed.
package netfilter
