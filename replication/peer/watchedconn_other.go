//go:build !linux

package peer

func (c *watchedConn) unread() (int, bool) { return 0, false }
