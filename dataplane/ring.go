package dataplane

import (
	"fmt"
	"net"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Ring formats of the AF_PACKET RX ring.
const (
	// RingV2 hands each frame to user space as soon as the kernel wrote it:
	// the lowest latency, and the default.
	RingV2 = "v2"
	// RingV3 hands whole blocks to user space when a block fills or its
	// retire timer (1 ms here) fires: fewer wakeups at high rates, but up to
	// the retire timeout of added latency at low rates.
	RingV3 = "v3"
)

// Ring geometry. Frames hold a full 1500-byte Ethernet frame plus the
// header; the RX ring is large enough to absorb several ms of traffic while
// the loop's core is lent (an 8 ms host steal at 100 kpps is 800 packets).
const (
	frameSize     = 2048
	rxFrames      = 4096
	rxBlockSize   = 1 << 16
	txFrames      = 512
	v3RetireMs    = 1
	txDataOffset  = 32 // TPACKET2_HDRLEN - sizeof(sockaddr_ll): where TX frame data starts
	ethPAllHost   = 0x0300
	maxFrameBytes = frameSize - txDataOffset
)

// rxRing is an AF_PACKET socket with an mmap'ed RX ring (TPACKET_V2 or V3).
type rxRing struct {
	fd      int
	mem     []byte
	version int
	// V2: frame index; V3: block index.
	next    int
	nslots  int
	slotLen int
}

func openRX(iface string, version string) (*rxRing, error) {
	ifc, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("iface %q: %w", iface, err)
	}
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, ethPAllHost)
	if err != nil {
		return nil, fmt.Errorf("AF_PACKET socket: %w", err)
	}
	r := &rxRing{fd: fd}
	fail := func(what string, err error) (*rxRing, error) {
		r.close()
		return nil, fmt.Errorf("iface %q: %s: %w", iface, what, err)
	}
	// Our own transmissions (reflect sends on the RX interface) must not
	// come back into the RX ring.
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_IGNORE_OUTGOING, 1); err != nil {
		return fail("PACKET_IGNORE_OUTGOING", err)
	}
	switch version {
	case RingV2, "":
		r.version = unix.TPACKET_V2
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V2); err != nil {
			return fail("PACKET_VERSION", err)
		}
		req := unix.TpacketReq{Block_size: rxBlockSize, Block_nr: rxFrames * frameSize / rxBlockSize, Frame_size: frameSize, Frame_nr: rxFrames}
		if err := unix.SetsockoptTpacketReq(fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
			return fail("PACKET_RX_RING", err)
		}
		r.nslots, r.slotLen = rxFrames, frameSize
	case RingV3:
		r.version = unix.TPACKET_V3
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V3); err != nil {
			return fail("PACKET_VERSION", err)
		}
		blocks := rxFrames * frameSize / rxBlockSize
		req := unix.TpacketReq3{Block_size: rxBlockSize, Block_nr: uint32(blocks), Frame_size: frameSize,
			Frame_nr: rxFrames, Retire_blk_tov: v3RetireMs}
		if err := unix.SetsockoptTpacketReq3(fd, unix.SOL_PACKET, unix.PACKET_RX_RING, &req); err != nil {
			return fail("PACKET_RX_RING", err)
		}
		r.nslots, r.slotLen = blocks, rxBlockSize
	default:
		return fail("ring", fmt.Errorf("unknown ring format %q (want %s or %s)", version, RingV2, RingV3))
	}
	mem, err := unix.Mmap(fd, 0, r.nslots*r.slotLen, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fail("mmap RX ring", err)
	}
	r.mem = mem
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: ethPAllHost, Ifindex: ifc.Index}); err != nil {
		return fail("bind", err)
	}
	return r, nil
}

func (r *rxRing) fileDescriptor() int { return r.fd }

func (r *rxRing) stampPath() string { return StampKernel }

func (r *rxRing) close() {
	if r.mem != nil {
		_ = unix.Munmap(r.mem)
		r.mem = nil
	}
	if r.fd > 0 {
		_ = unix.Close(r.fd)
		r.fd = -1
	}
}

func (r *rxRing) slot(i int) unsafe.Pointer { return unsafe.Pointer(&r.mem[i*r.slotLen]) }

// status words are shared with the kernel: read and write them atomically.
func loadStatus(p unsafe.Pointer) uint32     { return atomic.LoadUint32((*uint32)(p)) }
func storeStatus(p unsafe.Pointer, v uint32) { atomic.StoreUint32((*uint32)(p), v) }

// v3 block descriptor: the block status is the first word of the header
// that follows version and offset_to_priv.
func v3Block(p unsafe.Pointer) *unix.TpacketHdrV1 {
	return (*unix.TpacketHdrV1)(unsafe.Add(p, 8))
}

// ready reports whether a frame (V2) or block (V3) is waiting, and the
// kernel RX timestamp (CLOCK_REALTIME ns) of the first waiting packet.
func (r *rxRing) ready() (realNs int64, ok bool) {
	p := r.slot(r.next)
	switch r.version {
	case unix.TPACKET_V2:
		if loadStatus(p)&unix.TP_STATUS_USER == 0 {
			return 0, false
		}
		h := (*unix.Tpacket2Hdr)(p)
		return int64(h.Sec)*1e9 + int64(h.Nsec), true
	default:
		b := v3Block(p)
		if loadStatus(unsafe.Pointer(&b.Block_status))&unix.TP_STATUS_USER == 0 {
			return 0, false
		}
		if b.Num_pkts == 0 {
			return 0, true
		}
		h := (*unix.Tpacket3Hdr)(unsafe.Add(p, b.Offset_to_first_pkt))
		return int64(h.Sec)*1e9 + int64(h.Nsec), true
	}
}

// rxSource is a receive path: an AF_PACKET ring or an AF_XDP socket.
type rxSource interface {
	// ready reports whether a frame is waiting and the CLOCK_REALTIME ns
	// stamp of the first one (0 if unknown).
	ready() (realNs int64, ok bool)
	// drain hands up to max waiting frames to h and returns how many.
	drain(h frameHandler, max int) int
	fileDescriptor() int
	// stampPath names where the RX stamps come from (StampKernel, ...).
	stampPath() string
	close()
}

// frameHandler processes one received frame in place. status carries the
// kernel's TP_STATUS bits (e.g. checksum not ready); waitNs is how long the
// frame had been in the ring when the batch was picked up (from its kernel
// RX stamp), or -1 when the frame carries no stamp.
type frameHandler interface {
	handle(frame []byte, status uint32, waitNs int64)
}

// frameWait is now - stamp for a frame stamp in the same clock, or -1 for
// a missing stamp. A clock step can make it negative: that counts as 0.
func frameWait(nowNs, stampNs int64) int64 {
	if stampNs == 0 {
		return -1
	}
	return max(nowNs-stampNs, 0)
}

// drain hands up to max waiting frames (V2) or one block (V3) to h and
// returns them to the kernel. It returns how many frames it handled. Ring
// stamps are CLOCK_REALTIME: one clock read per batch prices every frame's
// wait (the frames of a batch are handled within microseconds).
func (r *rxRing) drain(h frameHandler, max int) int {
	now := time.Now().UnixNano()
	if r.version == unix.TPACKET_V2 {
		n := 0
		for n < max {
			p := r.slot(r.next)
			st := loadStatus(p)
			if st&unix.TP_STATUS_USER == 0 {
				break
			}
			hdr := (*unix.Tpacket2Hdr)(p)
			off := r.next*r.slotLen + int(hdr.Mac)
			h.handle(r.mem[off:off+int(hdr.Snaplen)], st, frameWait(now, int64(hdr.Sec)*1e9+int64(hdr.Nsec)))
			storeStatus(p, unix.TP_STATUS_KERNEL)
			r.next++
			if r.next == r.nslots {
				r.next = 0
			}
			n++
		}
		return n
	}
	p := r.slot(r.next)
	b := v3Block(p)
	if loadStatus(unsafe.Pointer(&b.Block_status))&unix.TP_STATUS_USER == 0 {
		return 0
	}
	base := r.next * r.slotLen
	off := int(b.Offset_to_first_pkt)
	n := int(b.Num_pkts)
	for i := 0; i < n; i++ {
		hdr := (*unix.Tpacket3Hdr)(unsafe.Pointer(&r.mem[base+off]))
		start := base + off + int(hdr.Mac)
		h.handle(r.mem[start:start+int(hdr.Snaplen)], hdr.Status, frameWait(now, int64(hdr.Sec)*1e9+int64(hdr.Nsec)))
		off += int(hdr.Next_offset)
	}
	storeStatus(unsafe.Pointer(&b.Block_status), unix.TP_STATUS_KERNEL)
	r.next++
	if r.next == r.nslots {
		r.next = 0
	}
	return n
}

// txRing is an AF_PACKET socket with an mmap'ed TPACKET_V2 TX ring: frames
// are queued in the ring and sent with one sendto per batch.
type txRing struct {
	fd      int
	mem     []byte
	next    int
	pending int
	mac     net.HardwareAddr
}

func openTX(iface string) (*txRing, error) {
	ifc, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("iface %q: %w", iface, err)
	}
	// Protocol 0: this socket sends only and receives nothing.
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("AF_PACKET socket: %w", err)
	}
	t := &txRing{fd: fd, mac: ifc.HardwareAddr}
	fail := func(what string, err error) (*txRing, error) {
		t.close()
		return nil, fmt.Errorf("iface %q: %s: %w", iface, what, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_VERSION, unix.TPACKET_V2); err != nil {
		return fail("PACKET_VERSION", err)
	}
	// The DP loop is the only sender and wants no queueing discipline on its path.
	if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_QDISC_BYPASS, 1); err != nil {
		return fail("PACKET_QDISC_BYPASS", err)
	}
	req := unix.TpacketReq{Block_size: rxBlockSize, Block_nr: txFrames * frameSize / rxBlockSize, Frame_size: frameSize, Frame_nr: txFrames}
	if err := unix.SetsockoptTpacketReq(fd, unix.SOL_PACKET, unix.PACKET_TX_RING, &req); err != nil {
		return fail("PACKET_TX_RING", err)
	}
	mem, err := unix.Mmap(fd, 0, txFrames*frameSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return fail("mmap TX ring", err)
	}
	t.mem = mem
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: 0, Ifindex: ifc.Index}); err != nil {
		return fail("bind", err)
	}
	return t, nil
}

func (t *txRing) close() {
	if t.mem != nil {
		_ = unix.Munmap(t.mem)
		t.mem = nil
	}
	if t.fd > 0 {
		_ = unix.Close(t.fd)
		t.fd = -1
	}
}

// put copies frame into the next TX slot. It returns false (the frame is
// dropped) when the ring is full even after flushing.
func (t *txRing) put(frame []byte) bool {
	if len(frame) > maxFrameBytes {
		return false
	}
	p := unsafe.Pointer(&t.mem[t.next*frameSize])
	if st := loadStatus(p); st != unix.TP_STATUS_AVAILABLE && st != unix.TP_STATUS_WRONG_FORMAT {
		t.flush()
		if st = loadStatus(p); st != unix.TP_STATUS_AVAILABLE && st != unix.TP_STATUS_WRONG_FORMAT {
			return false
		}
	}
	base := t.next*frameSize + txDataOffset
	copy(t.mem[base:], frame)
	hdr := (*unix.Tpacket2Hdr)(p)
	hdr.Len = uint32(len(frame))
	hdr.Snaplen = uint32(len(frame))
	storeStatus(p, unix.TP_STATUS_SEND_REQUEST)
	t.next++
	if t.next == txFrames {
		t.next = 0
	}
	t.pending++
	return true
}

// flush asks the kernel to send every queued frame. It does not wait for
// completion; slots come back as the kernel frees the sent packets.
func (t *txRing) flush() {
	if t.pending == 0 {
		return
	}
	t.pending = 0
	// A raw syscall: no allocation, and EAGAIN/ENOBUFS just mean the next
	// flush retries what is still marked for sending.
	_, _, _ = unix.Syscall6(unix.SYS_SENDTO, uintptr(t.fd), 0, 0, unix.MSG_DONTWAIT, 0, 0)
}
