package testbed

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"

	"github.com/taichi-sched/taichi/internal/netns"
)

// echoCalls numbers echo calls for their ICMP ids.
var echoCalls atomic.Uint32

// echoReport is what one round of ICMP echoes got back.
type echoReport struct {
	sent, answered int
	maxRTT         time.Duration
}

func (r echoReport) String() string {
	return fmt.Sprintf("%d echoes sent, %d answered, max rtt %v", r.sent, r.answered, r.maxRTT.Round(time.Microsecond))
}

// echo sends count ICMP echo requests from netns ns to dst, interval apart,
// and collects the replies until every one came back or the deadline (the
// sending time plus grace) passed. A reply counts once, however late within
// the deadline: the question is whether the path delivers, not how fast
// (that is the latency benchmarks'). Bounded: count packets, one deadline.
func echo(ctx context.Context, ns string, dst [4]byte, count int, interval, grace time.Duration) (echoReport, error) {
	var fd int
	err := netns.Do(ns, func() (err error) {
		fd, err = unix.Socket(unix.AF_INET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.IPPROTO_ICMP)
		return err
	})
	if err != nil {
		return echoReport{}, fmt.Errorf("icmp socket in %s: %w", ns, err)
	}
	defer unix.Close(fd)
	// A raw socket sees every echo reply in the namespace: an id per call
	// keeps an earlier call's late reply from counting here.
	id := uint16(os.Getpid()) + uint16(echoCalls.Add(1))<<8
	to := &unix.SockaddrInet4{Addr: dst}
	sentAt := make([]time.Time, count)
	got := make([]bool, count)
	rep := echoReport{}
	deadline := time.Now().Add(time.Duration(count)*interval + grace)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	next := time.Now()
	buf := make([]byte, 1500)
	for rep.answered < count && time.Now().Before(deadline) {
		now := time.Now()
		if rep.sent < count && !now.Before(next) {
			sentAt[rep.sent] = now
			if err := unix.Sendto(fd, echoRequest(id, uint16(rep.sent)), 0, to); err != nil {
				return rep, fmt.Errorf("icmp send: %w", err)
			}
			rep.sent++
			next = now.Add(interval)
		}
		wait := time.Until(deadline)
		if rep.sent < count {
			wait = min(wait, time.Until(next))
		}
		if err := waitReadable(fd, wait); err != nil {
			return rep, err
		}
		for {
			n, _, err := unix.Recvfrom(fd, buf, unix.MSG_DONTWAIT)
			if errors.Is(err, unix.EAGAIN) {
				break
			}
			if err != nil {
				return rep, fmt.Errorf("icmp receive: %w", err)
			}
			if seq, ok := echoReply(buf[:n], id, dst); ok && int(seq) < rep.sent && !got[seq] {
				got[seq] = true
				rep.answered++
				rep.maxRTT = max(rep.maxRTT, time.Since(sentAt[seq]))
			}
		}
		if ctx.Err() != nil {
			return rep, ctx.Err()
		}
	}
	return rep, nil
}

func waitReadable(fd int, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	ts := unix.NsecToTimespec(d.Nanoseconds())
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	if _, err := unix.Ppoll(fds, &ts, nil); err != nil && !errors.Is(err, unix.EINTR) {
		return fmt.Errorf("icmp poll: %w", err)
	}
	return nil
}

// echoRequest is an ICMP echo request with id and seq and a small payload.
func echoRequest(id, seq uint16) []byte {
	b := make([]byte, 8+32)
	b[0] = 8 // echo request
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], seq)
	copy(b[8:], "taichi testbed echo")
	binary.BigEndian.PutUint16(b[2:], icmpChecksum(b))
	return b
}

// echoReply returns the sequence number of a raw IPv4 packet that is an
// echo reply from src to our id.
func echoReply(pkt []byte, id uint16, src [4]byte) (uint16, bool) {
	if len(pkt) < 20 || pkt[0]>>4 != 4 {
		return 0, false
	}
	ihl := int(pkt[0]&0x0f) * 4
	if len(pkt) < ihl+8 || [4]byte(pkt[12:16]) != src {
		return 0, false
	}
	icmp := pkt[ihl:]
	if icmp[0] != 0 || binary.BigEndian.Uint16(icmp[4:]) != id {
		return 0, false
	}
	return binary.BigEndian.Uint16(icmp[6:]), true
}

func icmpChecksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}
