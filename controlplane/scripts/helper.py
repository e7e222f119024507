"""VM-startup helper in Python: validates the VM's network config and hashes
in proportion to the VM's size (stands for an agent rendering and signing
its configuration)."""
import hashlib
import json
import sys


def main() -> int:
    path, size = sys.argv[1], int(sys.argv[2])
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    for key in ("vm", "netns", "mac", "mtu", "address", "gateway"):
        if key not in cfg:
            print(f"helper.py: {path}: missing key {key!r}", file=sys.stderr)
            return 1
    digest = json.dumps(cfg, sort_keys=True).encode()
    for _ in range(size * 40000):
        digest = hashlib.sha256(digest).digest()
    print(digest.hex())
    return 0


if __name__ == "__main__":
    sys.exit(main())
