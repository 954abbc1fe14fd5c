// Copyright The io.rrc.v1 Authors.
// SPDX-License-Identifier: Apache-2.0

package servicenet

import "net"

// Every derived MAC starts with these: 0x02 is a locally administered
// unicast first octet, 0x52 ('R') marks the address as ours.
const (
	derivedMACOctet0 = 0x02
	derivedMACOctet1 = 0x52
)

// DeriveMAC returns the MAC the service interface gets when the settings
// name none: 02:52 followed by the four octets of the IPv4 address. Both
// hosts derive the same MAC from the same address, so a client's neighbour
// entry stays right across a failover; distinct service addresses on one LAN
// never collide. It returns nil for an address that is not IPv4.
func DeriveMAC(ip net.IP) net.HardwareAddr {
	ip4 := ip.To4()
	if ip4 == nil {
		return nil
	}
	return net.HardwareAddr{derivedMACOctet0, derivedMACOctet1, ip4[0], ip4[1], ip4[2], ip4[3]}
}
