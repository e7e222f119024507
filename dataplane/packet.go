package dataplane

import (
	"encoding/binary"

	"golang.org/x/sys/unix"
)

const (
	ethHeaderLen = 14
	ipv4MinLen   = 20
	udpHeaderLen = 8
	etherTypeIP  = 0x0800

	icmpEchoLen     = 8 // type, code, checksum, identifier, sequence
	icmpEchoRequest = 8
	icmpEchoReply   = 0
	// ipFragMask selects the more-fragments flag and the fragment offset.
	ipFragMask = 0x3fff
)

// reflectFrame turns a frame around in place, the way the VM behind the
// vswitch would answer it. Two kinds are handled:
//   - Ethernet/IPv4/UDP: it swaps the MAC addresses, the IP addresses and
//     the UDP ports. The IP and UDP checksums stay valid (a one's complement
//     sum does not depend on the order of its words). When the kernel
//     reports the UDP checksum as not yet computed (csumNotReady: the sender
//     left it to offload), the checksum field is cleared, which IPv4 UDP
//     defines as "no checksum".
//   - an unfragmented Ethernet/IPv4 ICMP echo request: it becomes the echo
//     reply (MACs and IP addresses swapped, type 0), its ICMP checksum
//     updated for the type change (RFC 1624). ICMP has no offloaded
//     checksum, so csumNotReady does not apply.
//
// It returns false, leaving frame untouched, for anything else.
func reflectFrame(frame []byte, csumNotReady bool) bool {
	if len(frame) < ethHeaderLen+ipv4MinLen || binary.BigEndian.Uint16(frame[12:14]) != etherTypeIP {
		return false
	}
	ip := frame[ethHeaderLen:]
	ihl := int(ip[0]&0x0f) * 4
	if ip[0]>>4 != 4 || ihl < ipv4MinLen {
		return false
	}
	switch ip[9] {
	case unix.IPPROTO_UDP:
		if len(ip) < ihl+udpHeaderLen {
			return false
		}
		udp := ip[ihl:]
		udp[0], udp[1], udp[2], udp[3] = udp[2], udp[3], udp[0], udp[1]
		if csumNotReady {
			udp[6], udp[7] = 0, 0
		}
	case unix.IPPROTO_ICMP:
		// A fragment's other pieces would need answering too: leave them.
		if len(ip) < ihl+icmpEchoLen || ip[ihl] != icmpEchoRequest || ip[ihl+1] != 0 ||
			binary.BigEndian.Uint16(ip[6:8])&ipFragMask != 0 {
			return false
		}
		icmp := ip[ihl:]
		icmp[0] = icmpEchoReply
		sum := binary.BigEndian.Uint16(icmp[2:4])
		binary.BigEndian.PutUint16(icmp[2:4], checksumReplace(sum, icmpEchoRequest<<8, icmpEchoReply<<8))
	default:
		return false
	}
	for i := 0; i < 6; i++ {
		frame[i], frame[6+i] = frame[6+i], frame[i]
	}
	for i := 12; i < 16; i++ {
		ip[i], ip[i+4] = ip[i+4], ip[i]
	}
	return true
}

// checksumReplace returns an Internet checksum after one 16-bit word of the
// data it covers changed from old to new: RFC 1624 eqn. 3,
// HC' = ~(~HC + ~m + m'), as Linux's csum_replace2 computes it.
func checksumReplace(sum, old, new uint16) uint16 {
	s := uint32(^sum) + uint32(^old) + uint32(new)
	s = s&0xffff + s>>16
	s = s&0xffff + s>>16
	return ^uint16(s)
}

// forwardFrame prepares a frame for the forward interface: with a
// next-hop MAC it rewrites the destination to it and the source to the
// output interface's MAC (a router's L2 rewrite); without one the frame
// leaves unchanged (like testpmd's io forwarding). A UDP checksum the
// sender left to offload is cleared, as in reflectFrame.
func forwardFrame(frame []byte, srcMAC, dstMAC []byte, csumNotReady bool) bool {
	if len(frame) < ethHeaderLen {
		return false
	}
	if csumNotReady {
		clearUDPChecksum(frame)
	}
	if len(dstMAC) == 6 {
		copy(frame[0:6], dstMAC)
		if len(srcMAC) == 6 {
			copy(frame[6:12], srcMAC)
		}
	}
	return true
}

// clearUDPChecksum sets an IPv4 UDP frame's checksum to zero ("none").
func clearUDPChecksum(frame []byte) {
	if len(frame) < ethHeaderLen+ipv4MinLen+udpHeaderLen ||
		binary.BigEndian.Uint16(frame[12:14]) != etherTypeIP {
		return
	}
	ip := frame[ethHeaderLen:]
	ihl := int(ip[0]&0x0f) * 4
	if ip[0]>>4 != 4 || ihl < ipv4MinLen || len(ip) < ihl+udpHeaderLen || ip[9] != unix.IPPROTO_UDP {
		return
	}
	ip[ihl+6], ip[ihl+7] = 0, 0
}
