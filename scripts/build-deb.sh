#!/usr/bin/env bash
# build-deb.sh: build the Debian packages with dpkg-deb:
#   taichi_<ver>_<arch>.deb  /usr/bin/taichi, the systemd unit, the
#                            /etc/taichi/taichi.yaml conffile (the embedded
#                            default), docs; one per architecture
#   taichi-dkms_<ver>_all.deb  the kernel module source for DKMS
#                              (/usr/src/taichi-<ver>/ with dkms.conf)
# Packaging files: deploy/debian/. Lintian: scripts/deb-install-test.sh.
#
# Usage: scripts/build-deb.sh [OUTDIR]   (default out/deb)
# Env:   TAICHI_VERSION  version the binary reports (default: git describe --tags --always --dirty)
#        DEB_VERSION     Debian version (default: derived from TAICHI_VERSION)
#        DEB_ARCHES      architectures (default: "amd64 arm64")
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
out=${1:-$root/out/deb}
arches=${DEB_ARCHES:-amd64 arm64}
GO=${GO:-go}

die() { echo "build-deb: $*" >&2; exit 1; }
for tool in dpkg-deb "$GO" git gzip md5sum; do
  command -v "$tool" >/dev/null || die "$tool not found"
done

version=${TAICHI_VERSION:-$(git describe --tags --always --dirty)}

# debian_version turns git describe output into a Debian version that sorts
# the way the history does: v1.2.0-3-gabc123-dirty -> 1.2.0+3.gabc123.dirty;
# without a tag, abc123 -> 0.0.0+<commits>.gabc123.
debian_version() {
  local v=$1 dirty=
  if [[ $v == *-dirty ]]; then
    v=${v%-dirty}
    dirty=.dirty
  fi
  if [[ $v =~ ^[0-9a-f]{7,40}$ ]] && ! git rev-parse -q --verify "refs/tags/$v" >/dev/null; then
    echo "0.0.0+$(git rev-list --count HEAD).g$v$dirty"
  elif [[ $v =~ ^v?([0-9][0-9A-Za-z.~]*)-([0-9]+)-g([0-9a-f]+)$ ]]; then
    echo "${BASH_REMATCH[1]}+${BASH_REMATCH[2]}.g${BASH_REMATCH[3]}$dirty"
  elif [[ $v =~ ^v?([0-9][0-9A-Za-z.~]*)$ ]]; then
    [ -n "$dirty" ] && echo "${BASH_REMATCH[1]}+0$dirty" || echo "${BASH_REMATCH[1]}"
  else
    die "cannot derive a Debian version from \"$1\": set DEB_VERSION"
  fi
}
debver=${DEB_VERSION:-$(debian_version "$version")}
[[ $debver =~ ^[0-9][A-Za-z0-9.+~]*$ ]] || die "DEB_VERSION \"$debver\" is not a native Debian version"

work=$(mktemp -d "${TMPDIR:-/tmp}/taichi-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

# Files in a .deb are 0644/0755 whatever the umask and the checkout say.
umask 022

# changelog: a native package's changelog.gz, one entry for this build.
changelog() {
  local pkg=$1
  {
    echo "$pkg ($debver) unstable; urgency=medium"
    echo
    echo "  * Built from $version."
    echo
    echo " -- taichi developers <taichi-sched@users.noreply.github.com>  $(date -R -d "@$(git log -1 --format=%ct)")"
  } | gzip -9n
}

# finish writes DEBIAN/control from the template, md5sums, and builds the .deb.
finish() {
  local pkg=$1 arch=$2 dir=$3 src=$root/deploy/debian/$1
  mkdir -p "$dir/DEBIAN"
  for s in postinst prerm postrm; do
    [ -f "$src/$s" ] || continue
    sed "s/@VERSION@/$debver/g" "$src/$s" >"$dir/DEBIAN/$s"
    chmod 0755 "$dir/DEBIAN/$s"
  done
  [ -f "$src/conffiles" ] && install -m 0644 "$src/conffiles" "$dir/DEBIAN/conffiles"
  (cd "$dir" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z | xargs -0 md5sum) >"$dir/DEBIAN/md5sums"
  local size
  size=$(du -sk --exclude=DEBIAN "$dir" | cut -f1)
  sed -e "s/@VERSION@/$debver/g" -e "s/@ARCH@/$arch/g" -e "s/@INSTALLED_SIZE@/$size/g" "$src/control.in" >"$dir/DEBIAN/control"
  local deb=$out/${pkg}_${debver}_${arch}.deb
  dpkg-deb --root-owner-group -Zxz --build "$dir" "$deb" >/dev/null
  echo "$deb"
}

docs() {
  local pkg=$1 dir=$2
  install -D -m 0644 deploy/debian/copyright "$dir/usr/share/doc/$pkg/copyright"
  changelog "$pkg" >"$dir/usr/share/doc/$pkg/changelog.gz"
  chmod 0644 "$dir/usr/share/doc/$pkg/changelog.gz"
  if [ -f "deploy/debian/$pkg/lintian-overrides" ]; then
    install -D -m 0644 "deploy/debian/$pkg/lintian-overrides" "$dir/usr/share/lintian/overrides/$pkg"
  fi
}

for arch in $arches; do
  case $arch in
  amd64 | arm64) ;;
  *) die "unsupported architecture $arch (amd64, arm64)" ;;
  esac
  dir=$work/taichi_$arch
  mkdir -p "$dir/usr/bin"
  # Static, stripped, reproducible: the same tree gives the same binary.
  GOOS=linux GOARCH=$arch CGO_ENABLED=0 "$GO" build -trimpath -buildvcs=false \
    -ldflags "-s -w -buildid= -X github.com/taichi-sched/taichi/daemon.Version=$version" \
    -o "$dir/usr/bin/taichi" ./cmd/taichi
  # The unit as shipped in deploy/, pointing at the packaged binary and
  # without its manual-install comment.
  install -d "$dir/lib/systemd/system"
  sed -e '/^# Install:/,/^#.*systemctl daemon-reload/d' -e 's#/usr/local/bin/taichi#/usr/bin/taichi#g' \
    deploy/taichi.service >"$dir/lib/systemd/system/taichi.service"
  chmod 0644 "$dir/lib/systemd/system/taichi.service"
  if grep -q /usr/local "$dir/lib/systemd/system/taichi.service"; then
    die "packaged unit still refers to /usr/local"
  fi
  install -D -m 0644 config/default.yaml "$dir/etc/taichi/taichi.yaml"
  docs taichi "$dir"
  install -m 0644 README.md "$dir/usr/share/doc/taichi/README.md"
  install -D -m 0644 deploy/taichi.yaml "$dir/usr/share/doc/taichi/examples/taichi.yaml"
  finish taichi "$arch" "$dir"
done

# The module source, with dkms.conf naming this version (DKMS builds taichi/<ver>).
dir=$work/taichi-dkms
src=$dir/usr/src/taichi-$debver
install -d "$src"
install -m 0644 kmod/module/{taichi.c,taichi_uapi.h,Kbuild,Makefile} "$src/"
sed "s/^PACKAGE_VERSION=.*/PACKAGE_VERSION=\"$debver\"/" kmod/module/dkms.conf >"$src/dkms.conf"
chmod 0644 "$src/dkms.conf"
grep -qx "PACKAGE_VERSION=\"$debver\"" "$src/dkms.conf" || die "dkms.conf: PACKAGE_VERSION not set"
docs taichi-dkms "$dir"
finish taichi-dkms all "$dir"
