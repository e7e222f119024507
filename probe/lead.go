package probe

import (
	"github.com/taichi-sched/taichi/internal/stats"

	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/taichi-sched/taichi/internal/netns"
)

// This file holds what measuring lead time needs: a sequence-numbered UDP
// sender, a packet-socket receiver on the DP interface (what a DP loop
// sees), an event watcher that re-arms a core after each event, and
// percentiles. Lead time = probe stamp -> the same packet (matched by the
// sequence number in its first 8 payload bytes, the event's Tag) arriving
// on the DP interface.

// PayloadSize is the UDP payload the sender writes, in trafficgen's layout:
// run id, sequence number (little-endian, at DefaultTagOffset), send time
// (CLOCK_MONOTONIC), zero padding.
const PayloadSize = 64

// UDPSender sends sequence-numbered datagrams from a namespace: the traffic
// whose arrivals a PacketReceiver times (the probe's, the CLI's and the
// testbed's lead measurements and tests).
type UDPSender struct {
	fd  int
	buf [PayloadSize]byte
}

// DialUDP opens a connected UDP socket in netnsName toward dst.
func DialUDP(netnsName string, dst netip.AddrPort) (*UDPSender, error) {
	if !dst.Addr().Is4() {
		return nil, fmt.Errorf("dst: %v is not IPv4", dst)
	}
	var fd int
	err := netns.Do(netnsName, func() error {
		var err error
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		sa := &unix.SockaddrInet4{Port: int(dst.Port()), Addr: dst.Addr().As4()}
		if err := unix.Connect(fd, sa); err != nil {
			unix.Close(fd)
			return err
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("udp sender in %q to %v: %w", netnsName, dst, err)
	}
	return &UDPSender{fd: fd}, nil
}

// Send sends one datagram carrying seq. ENOBUFS (a full queue at max
// rate) is returned as is so callers can count it.
func (s *UDPSender) Send(seq uint64) error {
	binary.LittleEndian.PutUint64(s.buf[DefaultTagOffset:], seq)
	binary.LittleEndian.PutUint64(s.buf[16:], uint64(monoNow()))
	_, err := unix.Write(s.fd, s.buf[:])
	return err
}

// Close closes the socket.
func (s *UDPSender) Close() error { return unix.Close(s.fd) }

// Arrival is one packet seen by a PacketReceiver.
type Arrival struct {
	Seq      uint64 // little-endian sequence number at DefaultTagOffset of the UDP payload
	KernelNs int64  // kernel receive stamp, converted to CLOCK_MONOTONIC
	UserNs   int64  // CLOCK_MONOTONIC when the read returned
	Len      int
}

// PacketReceiver reads IPv4/UDP frames on an interface with an AF_PACKET
// socket, stamped by the kernel on arrival.
type PacketReceiver struct {
	fd    int
	buf   []byte
	oob   []byte
	iface string
}

// ListenPacket opens a packet socket on iface in netnsName (the DP interface
// carries no address: the DP loop owns it like a DPDK port).
func ListenPacket(netnsName, iface string) (*PacketReceiver, error) {
	var fd int
	err := netns.Do(netnsName, func() error {
		ifc, err := net.InterfaceByName(iface)
		if err != nil {
			return err
		}
		proto := int(htons(unix.ETH_P_IP))
		fd, err = unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, proto)
		if err != nil {
			return err
		}
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1); err != nil {
			unix.Close(fd)
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_IP), Ifindex: ifc.Index}); err != nil {
			unix.Close(fd)
			return err
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("packet receiver on %s/%s: %w", netnsName, iface, err)
	}
	return &PacketReceiver{fd: fd, buf: make([]byte, 2048), oob: make([]byte, 128), iface: iface}, nil
}

// FD is the socket, readable when a frame is queued (non-blocking).
func (r *PacketReceiver) FD() int { return r.fd }

// Close closes the socket.
func (r *PacketReceiver) Close() error { return unix.Close(r.fd) }

// Recv reads one queued frame without blocking. ok is false when none is
// queued. Frames that are not IPv4/UDP with 8 payload bytes are skipped.
func (r *PacketReceiver) Recv() (a Arrival, ok bool, err error) {
	for {
		n, oobn, _, _, err := unix.Recvmsg(r.fd, r.buf, r.oob, 0)
		if errors.Is(err, unix.EAGAIN) {
			return Arrival{}, false, nil
		}
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return Arrival{}, false, fmt.Errorf("recv on %s: %w", r.iface, err)
		}
		user := monoNow()
		seq, okSeq := udpSeq(r.buf[:n])
		if !okSeq {
			continue
		}
		a = Arrival{Seq: seq, UserNs: user, Len: n}
		if rt, okTS := rxStamp(r.oob[:oobn]); okTS {
			a.KernelNs = realToMono(rt)
		}
		return a, true, nil
	}
}

// RecvWait waits up to timeout for a frame.
func (r *PacketReceiver) RecvWait(timeout time.Duration) (Arrival, bool, error) {
	deadline := time.Now().Add(timeout)
	for {
		a, ok, err := r.Recv()
		if ok || err != nil {
			return a, ok, err
		}
		left := time.Until(deadline)
		if left <= 0 {
			return Arrival{}, false, nil
		}
		fds := []unix.PollFd{{Fd: int32(r.fd), Events: unix.POLLIN}}
		if _, err := unix.Poll(fds, int(left/time.Millisecond)+1); err != nil && !errors.Is(err, unix.EINTR) {
			return Arrival{}, false, err
		}
	}
}

// udpSeq returns the little-endian sequence number at DefaultTagOffset of
// the UDP payload of an Ethernet/IPv4 frame.
func udpSeq(f []byte) (uint64, bool) {
	const eth, ip, udp = 14, 20, 8
	const at = eth + ip + udp + DefaultTagOffset
	if len(f) < at+8 || f[12] != 0x08 || f[13] != 0x00 || f[eth] != 0x45 || f[eth+9] != unix.IPPROTO_UDP {
		return 0, false
	}
	return binary.LittleEndian.Uint64(f[at:]), true
}

func rxStamp(oob []byte) (int64, bool) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return 0, false
	}
	for _, m := range msgs {
		if m.Header.Level == unix.SOL_SOCKET && m.Header.Type == unix.SCM_TIMESTAMPNS && len(m.Data) >= int(unsafe.Sizeof(unix.Timespec{})) {
			ts := *(*unix.Timespec)(unsafe.Pointer(&m.Data[0]))
			return ts.Nano(), true
		}
	}
	return 0, false
}

// realToMono converts a CLOCK_REALTIME stamp to CLOCK_MONOTONIC with an
// offset sampled now. A realtime read bracketed by two monotonic reads
// gives the offset to within half the bracket; the tightest of a few
// brackets keeps a preemption between the reads out of the result.
func realToMono(realNs int64) int64 {
	best, offset := int64(-1), int64(0)
	for range 4 {
		var m1, r, m2 unix.Timespec
		_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &m1)
		_ = unix.ClockGettime(unix.CLOCK_REALTIME, &r)
		_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &m2)
		if w := m2.Nano() - m1.Nano(); best < 0 || w < best {
			best, offset = w, (m1.Nano()+m2.Nano())/2-r.Nano()
		}
		if best < 200 {
			break
		}
	}
	return realNs + offset
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }

// EventSource is a wake source that also returns the whole event.
type EventSource interface {
	WakeSource
	DisarmEvent() (Event, bool)
}

// WatchEvents waits on ws like a DP loop that is always idle: arm, block in
// epoll on FD, disarm, report the event and when the waiter woke, re-arm.
// It runs on a locked OS thread until ctx ends, then disarms.
func WatchEvents(ctx context.Context, ws EventSource, fn func(ev Event, wokeNs int64)) error {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return fmt.Errorf("epoll: %w", err)
	}
	defer unix.Close(epfd)
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, ws.FD(), &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(ws.FD())}); err != nil {
		return fmt.Errorf("epoll add: %w", err)
	}
	defer ws.Disarm()
	evs := make([]unix.EpollEvent, 1)
	ws.Arm()
	for ctx.Err() == nil {
		n, err := unix.EpollWait(epfd, evs, 50)
		if errors.Is(err, unix.EINTR) || n == 0 {
			continue
		}
		if err != nil {
			return fmt.Errorf("epoll wait: %w", err)
		}
		woke := monoNow()
		if ev, ok := ws.DisarmEvent(); ok {
			fn(ev, woke)
		}
		ws.Arm()
	}
	return nil
}

// Percentiles summarises durations (nearest-rank; see stats.Percentiles).
type Percentiles = stats.Percentiles

// PercentilesNs summarises nanosecond samples in microseconds.
func PercentilesNs(ns []int64) Percentiles {
	us := make([]float64, len(ns))
	for i, v := range ns {
		us[i] = float64(v) / 1e3
	}
	return stats.Summarize(us)
}
