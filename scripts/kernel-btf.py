#!/usr/bin/env python3
"""kernel-btf.py IMAGE OUT: write the kernel's own BTF (raw, as in
/sys/kernel/btf/vmlinux) found inside a kernel image to OUT.

Debian's headers packages ship no vmlinux, so module BTF (pahole
--btf_base) and kfunc ID resolution take the base BTF from the image the
guest boots: an uncompressed arm64 Image holds the blob as is; an x86
bzImage holds a compressed vmlinux (xz, zstd or gzip) whose .BTF section
is the blob. The blob is the largest well-formed BTF header+data found.
"""
import lzma
import struct
import subprocess
import sys
import zlib

MAGIC = b"\x9f\xeb\x01\x00"  # BTF magic 0xeb9f, little endian, version 1, flags 0


def largest_btf(data):
    best = None
    i = data.find(MAGIC)
    while i >= 0:
        if i + 24 <= len(data):
            hdr_len, type_off, type_len, str_off, str_len = struct.unpack_from("<IIIII", data, i + 4)
            size = hdr_len + str_off + str_len
            if hdr_len == 24 and type_off == 0 and str_off == type_len and str_len > 0 and i + size <= len(data):
                if best is None or size > best[1]:
                    best = (i, size)
        i = data.find(MAGIC, i + 1)
    return None if best is None else data[best[0]:best[0] + best[1]]


def decompressed(data):
    """Yields the payloads of the compressed streams embedded in data."""
    for magic, unpack in ((b"\xfd7zXZ\x00", lambda b: lzma.LZMADecompressor().decompress(b)),
                          (b"\x1f\x8b\x08", lambda b: zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(b)),
                          (b"\x28\xb5\x2f\xfd", lambda b: subprocess.run(
                              ["zstd", "-dc"], input=b, capture_output=True).stdout)):
        off = data.find(magic)
        if off < 0:
            continue
        try:
            yield unpack(data[off:])
        except (lzma.LZMAError, zlib.error, OSError):
            continue


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: kernel-btf.py IMAGE OUT")
    data = open(sys.argv[1], "rb").read()
    btf = largest_btf(data)
    if btf is None or len(btf) < 1 << 20:
        for inner in decompressed(data):
            btf = largest_btf(inner)
            if btf is not None:
                break
    if btf is None:
        sys.exit("kernel-btf: no BTF inside %s" % sys.argv[1])
    open(sys.argv[2], "wb").write(btf)
    print("kernel-btf: %s: %d bytes of BTF" % (sys.argv[1], len(btf)))


main()
