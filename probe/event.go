package probe

import (
	"encoding/binary"
	"fmt"
)

// Event is one wake event: the first packet for a DP core after it was armed.
type Event struct {
	Core    int
	Queue   uint32
	Ifindex uint32
	StampNs int64  // bpf_ktime_get_ns(): CLOCK_MONOTONIC
	Seq     uint64 // per-core event number, from 1
	Packets uint64 // packets counted on the queue, this one included
	// Tag holds the 8 UDP payload bytes at Options.TagOffset as sent (all
	// zero for other packets): the sender's sequence number.
	Tag [8]byte
}

// TagSeq reads Tag as the little-endian sequence number trafficgen and
// UDPSender write.
func (e Event) TagSeq() uint64 { return binary.LittleEndian.Uint64(e.Tag[:]) }

// Wire format of struct event in probe/bpf/probe.c (host byte order).
const (
	EventSize    = 48
	eventMagic   = 0x54434850 // "TCHP"
	eventVersion = 1
)

// DecodeEvent parses one ring-buffer record. It rejects records of the wrong
// size, magic or version, and values the program cannot produce.
func DecodeEvent(b []byte) (Event, error) {
	if len(b) != EventSize {
		return Event{}, fmt.Errorf("probe event: %d bytes, want %d", len(b), EventSize)
	}
	le := binary.NativeEndian
	if m := le.Uint32(b[0:]); m != eventMagic {
		return Event{}, fmt.Errorf("probe event: magic %#x, want %#x", m, eventMagic)
	}
	if v := le.Uint16(b[4:]); v != eventVersion {
		return Event{}, fmt.Errorf("probe event: version %d, want %d", v, eventVersion)
	}
	ev := Event{
		Core:    int(le.Uint16(b[6:])),
		Queue:   le.Uint32(b[8:]),
		Ifindex: le.Uint32(b[12:]),
		StampNs: int64(le.Uint64(b[16:])),
		Seq:     le.Uint64(b[24:]),
		Packets: le.Uint64(b[32:]),
	}
	copy(ev.Tag[:], b[40:48])
	switch {
	case ev.Core >= MaxCores:
		return Event{}, fmt.Errorf("probe event: core %d out of range 0..%d", ev.Core, MaxCores-1)
	case ev.StampNs <= 0:
		return Event{}, fmt.Errorf("probe event: stamp %d not positive", ev.StampNs)
	case ev.Seq == 0:
		return Event{}, fmt.Errorf("probe event: seq 0 (events count from 1)")
	case ev.Packets == 0:
		return Event{}, fmt.Errorf("probe event: packets 0 (the event's own packet counts)")
	}
	return ev, nil
}
