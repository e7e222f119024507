package dataplane

import (
	"fmt"
	"net"
	"sync/atomic"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// AF_XDP receive path (IOXDP): an XDP program on the RX interface stamps
// each frame with bpf_ktime_get_ns and redirects it to an AF_XDP socket in
// copy mode (veth has no zero-copy). The stamp goes into the frame's XDP
// metadata (bpf_xdp_adjust_meta) where the kernel allows that helper; some
// kernels refuse it for XDP programs (6.18.44 here: "program of this type
// cannot use helper bpf_xdp_adjust_meta#54"), and there the program
// prepends the stamp to the frame with bpf_xdp_adjust_head and the loop
// strips it. Both stamp at the same point, so residence means the same. The socket is written
// on x/sys/unix; the program and the XSKMap use cilium/ebpf. Frames go back
// to the fill ring right after handling: the TX side stays the AF_PACKET
// TX ring, so the two I/O modes differ only in how frames are received.

const (
	xskFrames    = 4096 // UMEM chunks, all owned by the fill ring when idle
	xskChunk     = 2048
	xskRXEntries = 2048
	xskCQEntries = 64 // unused (no AF_XDP TX) but the kernel requires the ring
	xskMetaLen   = 8  // the XDP program's timestamp in front of each frame
	xdpMdQueue   = 16 // offsetof(struct xdp_md, rx_queue_index)
	xdpMdData    = 0
	xdpMdDataEnd = 4
	xdpMdMeta    = 8
	xdpPass      = 2
	xdpRedirect  = 4
)

// Where the AF_XDP path's RX stamp travels (LoopConfig.XDPStamp,
// Stats.RXStamp). StampKernel is the AF_PACKET ring's own RX timestamp.
const (
	StampAuto    = ""         // XDPStampMeta where the kernel allows it, else XDPStampHead
	XDPStampMeta = "xdp-meta" // in the frame's XDP metadata (bpf_xdp_adjust_meta)
	XDPStampHead = "xdp-head" // prepended to the frame (bpf_xdp_adjust_head), stripped by the loop
	StampKernel  = "kernel"   // AF_PACKET: the kernel's RX timestamp in the ring's frame header
)

// xskRing is one of the four single-producer/single-consumer rings shared
// with the kernel.
type xskRing struct {
	mem      []byte
	producer *uint32
	consumer *uint32
	descs    unsafe.Pointer
	mask     uint32
}

func mapXSKRing(fd int, off unix.XDPRingOffset, pgoff int64, entries, descSize int) (xskRing, error) {
	mem, err := unix.Mmap(fd, pgoff, int(off.Desc)+entries*descSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return xskRing{}, err
	}
	return xskRing{
		mem:      mem,
		producer: (*uint32)(unsafe.Pointer(&mem[off.Producer])),
		consumer: (*uint32)(unsafe.Pointer(&mem[off.Consumer])),
		descs:    unsafe.Pointer(&mem[off.Desc]),
		mask:     uint32(entries - 1),
	}, nil
}

type xskRX struct {
	fd      int
	umem    []byte
	rx      xskRing
	fill    xskRing
	comp    xskRing
	prog    *ebpf.Program
	xsks    *ebpf.Map
	xdpLink link.Link
	// stampHead: the program prepended the stamp to the frame
	// (XDPStampHead); else it is in the metadata in front (XDPStampMeta).
	stampHead bool
}

// xdpProgram returns the redirect program for a stamp path. Both paths
// make 8 bytes of room with their helper (the metadata in front of the
// frame, or the frame's own head), check the room against the packet bounds
// the verifier wants, store the bpf_ktime_get_ns stamp there and redirect
// the frame to the socket of its RX queue.
//
// Metadata: without room the frame is redirected unstamped (the loop sees
// no stamp), and one without a socket is passed to the stack as it came.
// Head: without room the frame is passed to the stack and never reaches the
// socket, so every frame the loop reads carries the stamp; one that is not
// redirected (no socket) gets its head back before the stack sees it.
func xdpProgram(xsks *ebpf.Map, stampAt string) asm.Instructions {
	adjust, lo, hi, noRoom, outOfBounds := asm.FnXdpAdjustMeta, int16(xdpMdMeta), int16(xdpMdData), "redirect", "redirect"
	if stampAt == XDPStampHead {
		adjust, lo, hi, noRoom, outOfBounds = asm.FnXdpAdjustHead, xdpMdData, xdpMdDataEnd, "pass", "restore"
	}
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.FnKtimeGetNs.Call(),
		asm.Mov.Reg(asm.R7, asm.R0),
		asm.Mov.Reg(asm.R1, asm.R6),
		asm.Mov.Imm(asm.R2, -xskMetaLen),
		adjust.Call(),
		asm.JNE.Imm(asm.R0, 0, noRoom),
		asm.LoadMem(asm.R2, asm.R6, lo, asm.Word),
		asm.LoadMem(asm.R3, asm.R6, hi, asm.Word),
		asm.Mov.Reg(asm.R4, asm.R2),
		asm.Add.Imm(asm.R4, xskMetaLen),
		asm.JGT.Reg(asm.R4, asm.R3, outOfBounds),
		asm.StoreMem(asm.R2, 0, asm.R7, asm.DWord),
		asm.LoadMem(asm.R2, asm.R6, xdpMdQueue, asm.Word).WithSymbol("redirect"),
		asm.LoadMapPtr(asm.R1, xsks.FD()),
		asm.Mov.Imm(asm.R3, xdpPass),
		asm.FnRedirectMap.Call(),
	}
	if stampAt != XDPStampHead {
		return append(insns, asm.Return())
	}
	return append(insns,
		asm.JEq.Imm(asm.R0, xdpRedirect, "out"),
		asm.Mov.Reg(asm.R1, asm.R6).WithSymbol("restore"),
		asm.Mov.Imm(asm.R2, xskMetaLen),
		asm.FnXdpAdjustHead.Call(),
		asm.Mov.Imm(asm.R0, xdpPass).WithSymbol("pass"),
		asm.Return().WithSymbol("out"),
	)
}

// loadXDPProgram loads the redirect program for want (StampAuto: the
// metadata path, else the head path when the kernel refuses the first).
func loadXDPProgram(xsks *ebpf.Map, want string) (*ebpf.Program, string, error) {
	load := func(at string) (*ebpf.Program, error) {
		return ebpf.NewProgram(&ebpf.ProgramSpec{Name: "taichi_xsk", Type: ebpf.XDP, License: "GPL",
			Instructions: xdpProgram(xsks, at)})
	}
	if want != StampAuto {
		p, err := load(want)
		if err != nil {
			return nil, "", fmt.Errorf("load XDP program (%s stamp): %w", want, err)
		}
		return p, want, nil
	}
	p, metaErr := load(XDPStampMeta)
	if metaErr == nil {
		return p, XDPStampMeta, nil
	}
	p, err := load(XDPStampHead)
	if err != nil {
		return nil, "", fmt.Errorf("load XDP program: %s stamp: %v; %s stamp: %w", XDPStampMeta, metaErr, XDPStampHead, err)
	}
	return p, XDPStampHead, nil
}

// openXSK opens an AF_XDP socket on queue 0 of iface in copy mode and
// attaches the redirect program. The calling thread must be in the
// interface's namespace.
func openXSK(iface, stamp string) (_ *xskRX, err error) {
	ifc, err := net.InterfaceByName(iface)
	if err != nil {
		return nil, fmt.Errorf("iface %q: %w", iface, err)
	}
	x := &xskRX{fd: -1}
	defer func() {
		if err != nil {
			x.close()
			err = fmt.Errorf("iface %q: AF_XDP: %w", iface, err)
		}
	}()
	if x.fd, err = unix.Socket(unix.AF_XDP, unix.SOCK_RAW|unix.SOCK_CLOEXEC, 0); err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	if x.umem, err = unix.Mmap(-1, 0, xskFrames*xskChunk, unix.PROT_READ|unix.PROT_WRITE,
		unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE); err != nil {
		return nil, fmt.Errorf("umem: %w", err)
	}
	reg := unix.XDPUmemReg{Addr: uint64(uintptr(unsafe.Pointer(&x.umem[0]))), Len: uint64(len(x.umem)), Size: xskChunk}
	if err = setsockoptRaw(x.fd, unix.XDP_UMEM_REG, unsafe.Pointer(&reg), unsafe.Sizeof(reg)); err != nil {
		return nil, fmt.Errorf("XDP_UMEM_REG: %w", err)
	}
	for _, r := range []struct{ opt, n int }{
		{unix.XDP_UMEM_FILL_RING, xskFrames}, {unix.XDP_UMEM_COMPLETION_RING, xskCQEntries}, {unix.XDP_RX_RING, xskRXEntries},
	} {
		if err = unix.SetsockoptInt(x.fd, unix.SOL_XDP, r.opt, r.n); err != nil {
			return nil, fmt.Errorf("ring option %d: %w", r.opt, err)
		}
	}
	var off unix.XDPMmapOffsets
	offLen := uint32(unsafe.Sizeof(off))
	if _, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(x.fd), unix.SOL_XDP, unix.XDP_MMAP_OFFSETS,
		uintptr(unsafe.Pointer(&off)), uintptr(unsafe.Pointer(&offLen)), 0); errno != 0 {
		return nil, fmt.Errorf("XDP_MMAP_OFFSETS: %w", errno)
	}
	if x.rx, err = mapXSKRing(x.fd, off.Rx, unix.XDP_PGOFF_RX_RING, xskRXEntries, int(unsafe.Sizeof(unix.XDPDesc{}))); err != nil {
		return nil, fmt.Errorf("mmap rx ring: %w", err)
	}
	if x.fill, err = mapXSKRing(x.fd, off.Fr, unix.XDP_UMEM_PGOFF_FILL_RING, xskFrames, 8); err != nil {
		return nil, fmt.Errorf("mmap fill ring: %w", err)
	}
	if x.comp, err = mapXSKRing(x.fd, off.Cr, unix.XDP_UMEM_PGOFF_COMPLETION_RING, xskCQEntries, 8); err != nil {
		return nil, fmt.Errorf("mmap completion ring: %w", err)
	}
	// Every chunk starts in the fill ring, with room for the metadata the
	// program prepends.
	for i := uint32(0); i < xskFrames; i++ {
		*(*uint64)(unsafe.Add(x.fill.descs, 8*uintptr(i))) = uint64(i) * xskChunk
	}
	atomic.StoreUint32(x.fill.producer, xskFrames)

	if err = unix.Bind(x.fd, &unix.SockaddrXDP{Flags: unix.XDP_COPY, Ifindex: uint32(ifc.Index), QueueID: 0}); err != nil {
		return nil, fmt.Errorf("bind (copy mode, queue 0): %w", err)
	}
	if x.xsks, err = ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.XSKMap, KeySize: 4, ValueSize: 4, MaxEntries: 1}); err != nil {
		return nil, fmt.Errorf("XSKMap: %w", err)
	}
	if err = x.xsks.Put(uint32(0), uint32(x.fd)); err != nil {
		return nil, fmt.Errorf("XSKMap put: %w", err)
	}
	var at string
	if x.prog, at, err = loadXDPProgram(x.xsks, stamp); err != nil {
		return nil, err
	}
	x.stampHead = at == XDPStampHead
	if x.xdpLink, err = link.AttachXDP(link.XDPOptions{Program: x.prog, Interface: ifc.Index, Flags: link.XDPDriverMode}); err != nil {
		return nil, fmt.Errorf("attach XDP (driver mode): %w", err)
	}
	return x, nil
}

func setsockoptRaw(fd, opt int, p unsafe.Pointer, size uintptr) error {
	if _, _, errno := unix.Syscall6(unix.SYS_SETSOCKOPT, uintptr(fd), unix.SOL_XDP, uintptr(opt), uintptr(p), size, 0); errno != 0 {
		return errno
	}
	return nil
}

func (x *xskRX) fileDescriptor() int { return x.fd }

func (x *xskRX) stampPath() string {
	if x.stampHead {
		return XDPStampHead
	}
	return XDPStampMeta
}

func (x *xskRX) close() {
	if x.xdpLink != nil {
		_ = x.xdpLink.Close()
		x.xdpLink = nil
	}
	if x.prog != nil {
		_ = x.prog.Close()
		x.prog = nil
	}
	if x.xsks != nil {
		_ = x.xsks.Close()
		x.xsks = nil
	}
	for _, r := range []*xskRing{&x.rx, &x.fill, &x.comp} {
		if r.mem != nil {
			_ = unix.Munmap(r.mem)
			r.mem = nil
		}
	}
	if x.fd >= 0 {
		_ = unix.Close(x.fd)
		x.fd = -1
	}
	if x.umem != nil {
		_ = unix.Munmap(x.umem)
		x.umem = nil
	}
}

func (x *xskRX) desc(i uint32) *unix.XDPDesc {
	return (*unix.XDPDesc)(unsafe.Add(x.rx.descs, uintptr(i&x.rx.mask)*unsafe.Sizeof(unix.XDPDesc{})))
}

// ready reports whether a frame is waiting and its XDP stamp, converted to
// the ring timestamps' CLOCK_REALTIME convention so the loop treats both
// I/O modes alike (0 when the stamp is missing).
func (x *xskRX) ready() (int64, bool) {
	cons := atomic.LoadUint32(x.rx.consumer)
	if atomic.LoadUint32(x.rx.producer) == cons {
		return 0, false
	}
	_, mono := x.frame(x.desc(cons))
	if mono == 0 {
		return 0, true
	}
	return monotonicToReal(mono), true
}

// frame returns a descriptor's frame and the program's bpf_ktime_get_ns
// stamp in front of it, or 0 if it does not look like one (no room).
func (x *xskRX) frame(d *unix.XDPDesc) ([]byte, int64) {
	data := x.umem[d.Addr : d.Addr+uint64(d.Len)]
	var at uint64
	switch {
	case x.stampHead && d.Len >= xskMetaLen:
		at, data = d.Addr, data[xskMetaLen:]
	case !x.stampHead && d.Addr%xskChunk >= xskMetaLen:
		at = d.Addr - xskMetaLen
	default:
		return data, 0
	}
	return data, checkStamp(int64(*(*uint64)(unsafe.Pointer(&x.umem[at]))))
}

// checkStamp returns s if it is a plausible CLOCK_MONOTONIC stamp of a
// frame received in the last 10 s, else 0.
func checkStamp(s int64) int64 {
	now := nanotime()
	if s <= 0 || s > now || now-s > int64(10e9) {
		return 0
	}
	return s
}

func (x *xskRX) drain(h frameHandler, max int) int {
	cons := atomic.LoadUint32(x.rx.consumer)
	avail := int(atomic.LoadUint32(x.rx.producer) - cons)
	if avail == 0 {
		return 0
	}
	n := min(avail, max)
	fprod := atomic.LoadUint32(x.fill.producer)
	now := nanotime() // the program's stamps are CLOCK_MONOTONIC
	for i := 0; i < n; i++ {
		d := x.desc(cons + uint32(i))
		frame, stamp := x.frame(d)
		h.handle(frame, 0, frameWait(now, stamp))
		*(*uint64)(unsafe.Add(x.fill.descs, uintptr((fprod+uint32(i))&x.fill.mask)*8)) = d.Addr - d.Addr%xskChunk
	}
	atomic.StoreUint32(x.fill.producer, fprod+uint32(n))
	atomic.StoreUint32(x.rx.consumer, cons+uint32(n))
	return n
}
