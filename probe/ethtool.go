package probe

import (
	"bytes"
	"fmt"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ethtoolQueues reads a driver's per-queue RX counters (`ethtool -S`) with
// the SIOCETHTOOL ioctl. Drivers name them differently; queueStatRE covers
// the common spellings: rx_queue_0_packets (virtio, ena), rx0_packets
// (mlx5), rx-0.packets (i40e), rx_queue_0_xdp_packets (veth, which counts
// only packets that take its NAPI path).
type ethtoolQueues struct {
	fd      int // AF_INET socket opened in the interface's namespace
	iface   string
	nStats  int
	packets map[int]int // queue -> index into the stats
	bytes   map[int]int
	buf     []byte // struct ethtool_stats + values
}

var queueStatRE = regexp.MustCompile(`^rx[-_]?(?:queue[-_])?(\d+)[-_.](?:xdp_)?(packets|bytes)$`)

const (
	ethSSStats     = 1  // ETH_SS_STATS
	ethGStringLen  = 32 // ETH_GSTRING_LEN
	maxEthtoolStat = 1 << 16
)

// ifreqData is struct ifreq with ifr_data, keeping the pointer visible to
// the garbage collector.
type ifreqData struct {
	name [unix.IFNAMSIZ]byte
	data unsafe.Pointer
	_    [24 - unsafe.Sizeof(uintptr(0))]byte
}

func ethtoolIoctl(fd int, iface string, data unsafe.Pointer) error {
	var ifr ifreqData
	copy(ifr.name[:unix.IFNAMSIZ-1], iface)
	ifr.data = data
	_, _, errno := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr)))
	if errno != 0 {
		return errno
	}
	return nil
}

// openEthtoolQueues returns nil (and no error) when the driver exposes no
// per-queue RX packet counters. fd must be an AF_INET socket from the
// interface's namespace; the caller keeps owning it.
func openEthtoolQueues(fd int, iface string) (*ethtoolQueues, error) {
	info, err := unix.IoctlGetEthtoolDrvinfo(fd, iface)
	if err != nil {
		if err == unix.EOPNOTSUPP {
			return nil, nil
		}
		return nil, fmt.Errorf("ethtool drvinfo %s: %w", iface, err)
	}
	n := int(info.N_stats)
	if n == 0 {
		return nil, nil
	}
	if n > maxEthtoolStat {
		return nil, fmt.Errorf("ethtool %s: %d stats", iface, n)
	}
	strs := make([]byte, 12+n*ethGStringLen) // struct ethtool_gstrings
	*(*uint32)(unsafe.Pointer(&strs[0])) = unix.ETHTOOL_GSTRINGS
	*(*uint32)(unsafe.Pointer(&strs[4])) = ethSSStats
	*(*uint32)(unsafe.Pointer(&strs[8])) = uint32(n)
	err = ethtoolIoctl(fd, iface, unsafe.Pointer(&strs[0]))
	runtime.KeepAlive(strs)
	if err != nil {
		return nil, fmt.Errorf("ethtool strings %s: %w", iface, err)
	}
	names := make([]string, n)
	for i := range names {
		s := strs[12+i*ethGStringLen : 12+(i+1)*ethGStringLen]
		if z := bytes.IndexByte(s, 0); z >= 0 {
			s = s[:z]
		}
		names[i] = string(s)
	}
	e := parseQueueStats(names)
	if e == nil {
		return nil, nil
	}
	e.fd, e.iface, e.nStats = fd, iface, n
	e.buf = make([]byte, 8+8*n)
	return e, nil
}

// parseQueueStats finds per-queue RX packet (and byte) counters among
// ethtool stat names; nil when there is none.
func parseQueueStats(names []string) *ethtoolQueues {
	e := &ethtoolQueues{packets: map[int]int{}, bytes: map[int]int{}}
	for i, name := range names {
		m := queueStatRE.FindStringSubmatch(name)
		if m == nil {
			continue
		}
		q, err := strconv.Atoi(m[1])
		if err != nil {
			continue
		}
		if m[2] == "packets" {
			e.packets[q] = i
		} else {
			e.bytes[q] = i
		}
	}
	if len(e.packets) == 0 {
		return nil
	}
	return e
}

// read refreshes the values (one ioctl).
func (e *ethtoolQueues) read() error {
	*(*uint32)(unsafe.Pointer(&e.buf[0])) = unix.ETHTOOL_GSTATS
	*(*uint32)(unsafe.Pointer(&e.buf[4])) = uint32(e.nStats)
	err := ethtoolIoctl(e.fd, e.iface, unsafe.Pointer(&e.buf[0]))
	runtime.KeepAlive(e.buf)
	if err != nil {
		return fmt.Errorf("ethtool stats %s: %w", e.iface, err)
	}
	if got := int(*(*uint32)(unsafe.Pointer(&e.buf[4]))); got != e.nStats {
		return fmt.Errorf("ethtool stats %s: driver now reports %d stats, had %d", e.iface, got, e.nStats)
	}
	return nil
}

func (e *ethtoolQueues) value(i int) uint64 {
	return *(*uint64)(unsafe.Pointer(&e.buf[8+8*i]))
}

// queue returns queue q's RX packets and bytes from the last read.
func (e *ethtoolQueues) queue(q int) (packets, bytes uint64) {
	if i, ok := e.packets[q]; ok {
		packets = e.value(i)
	}
	if i, ok := e.bytes[q]; ok {
		bytes = e.value(i)
	}
	return packets, bytes
}

// queues lists the queues with a packet counter, ascending.
func (e *ethtoolQueues) queues() []int {
	out := make([]int, 0, len(e.packets))
	for q := range e.packets {
		out = append(out, q)
	}
	slices.Sort(out)
	return out
}
