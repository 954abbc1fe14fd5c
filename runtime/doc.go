// Package runtime holds what touches a replicated container directly:
// CRIU checkpoint and restore, cgroup freeze and thaw, the service network
// interface, and the writable layer's changes. It is driven by the
// replication engine and knows nothing of containerd.
package runtime
