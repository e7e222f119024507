#!/usr/bin/env bash
# deb-install-test.sh: build the Debian packages, check them with lintian,
# check the arm64 package holds an aarch64 binary, then install the amd64
# package and taichi-dkms on this machine for real and take them away again:
#
#   dpkg -i -> unit enabled but not started, systemd-analyze verify on the
#   installed unit, taichi config validate on the conffile, dkms build against
#   the installed Debian headers -> operator edits the conffile -> dpkg -i of a
#   higher version keeps the edit -> dpkg -r leaves only the conffile and the
#   unit's enable state -> dpkg -P leaves nothing.
#
# Never touches a taichi installed by anything else: it skips (exit 0, with the
# reason) when one is there; under TAICHI_TEST_STRICT=1 (make test) such a skip
# is a failure, since a test machine should not hold another taichi. A daemon
# state directory (/var/lib/taichi, which any `taichi run` with the default
# state_dir creates) that no package owns is not an install: it is moved aside
# for the run and put back after. A run that died is cleaned up by the next
# one (a marker file says the installed package is the test's; the saved state
# directory is restored), and every exit path purges what the test installed.
#
# Usage: scripts/deb-install-test.sh [WORKDIR]   (default out/deb-test)
# Output: out/deb-lintian.txt (lintian's report on the three packages)
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
work=${1:-$root/out/deb-test}
lintian_out=$root/out/deb-lintian.txt
marker_dir=/var/lib/taichi-deb-install-test
marker=$marker_dir/installed

say() { echo "deb-install-test: $*"; }
skip() {
  if [ "${TAICHI_TEST_STRICT:-}" = 1 ]; then
    fail "strict (\$TAICHI_TEST_STRICT=1), would skip: $*"
  fi
  say "SKIP: $*"
  exit 0
}
fail() { say "FAIL: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || skip "needs root (dpkg -i)"
for tool in dpkg dpkg-deb dpkg-query; do
  command -v "$tool" >/dev/null || skip "$tool not found: not a Debian system"
done
for tool in lintian file; do
  command -v "$tool" >/dev/null || fail "$tool not found: run scripts/deps.sh (as root) first"
done

# pkg_state prints installed, config-files, ... or absent.
pkg_state() {
  local s
  s=$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null) || s=absent
  echo "${s:-absent}"
}

saved_state=$marker_dir/state-dir

purge_test_install() {
  if [ -f "$marker" ]; then
    dpkg -P taichi-dkms taichi >/dev/null 2>&1 || true
    rm -rf /var/lib/taichi
    rm -f "$marker"
  fi
  # The daemon state directory the run set aside goes back.
  if [ -d "$saved_state" ] && [ ! -e /var/lib/taichi ]; then
    mv "$saved_state" /var/lib/taichi
  fi
  rmdir "$marker_dir" 2>/dev/null || true
}

# A previous run that died left its install behind: take it away first.
if [ -f "$marker" ] || [ -d "$saved_state" ]; then
  say "purging the install a previous run left behind"
  purge_test_install
fi
for p in taichi taichi-dkms; do
  case $(pkg_state "$p") in
  absent | not-installed) ;;
  *) skip "package $p is on this machine ($(pkg_state "$p")) and not from this test: leaving it alone" ;;
  esac
done
for path in /usr/bin/taichi /etc/taichi /lib/systemd/system/taichi.service /etc/systemd/system/taichi.service /var/lib/dkms/taichi; do
  if [ -e "$path" ] || [ -L "$path" ]; then
    skip "$path exists and is not from this test: leaving this machine's taichi alone"
  fi
done

trap purge_test_install EXIT
# A state directory without an installed package is a `taichi run`'s
# (default state_dir), not an install: set it aside, put it back at exit.
if [ -e /var/lib/taichi ] || [ -L /var/lib/taichi ]; then
  if pgrep -x taichi >/dev/null; then
    skip "/var/lib/taichi exists and a taichi process is running: leaving its state alone"
  fi
  say "setting aside /var/lib/taichi (a daemon's state, no package) for the run"
  mkdir -p "$marker_dir"
  mv /var/lib/taichi "$saved_state"
fi
rm -rf "$work"
mkdir -p "$work" "$(dirname "$lintian_out")"

# --- build: this tree's version for amd64 and arm64, and a higher one for the upgrade.
say "building packages"
tver1=$(git describe --tags --always --dirty)
TAICHI_VERSION=$tver1 scripts/build-deb.sh "$work/v1" >"$work/build-v1.txt"
deb1=$(grep '/taichi_.*_amd64\.deb$' "$work/build-v1.txt")
deb1arm=$(grep '/taichi_.*_arm64\.deb$' "$work/build-v1.txt")
dkms1=$(grep '/taichi-dkms_.*_all\.deb$' "$work/build-v1.txt")
ver1=$(dpkg-deb -f "$deb1" Version)
ver2=$ver1+upgrade1
tver2=$tver1-upgrade1
dpkg --compare-versions "$ver2" gt "$ver1" || fail "$ver2 does not sort after $ver1"
DEB_ARCHES=amd64 DEB_VERSION=$ver2 TAICHI_VERSION=$tver2 scripts/build-deb.sh "$work/v2" >"$work/build-v2.txt"
deb2=$(grep '/taichi_.*_amd64\.deb$' "$work/build-v2.txt")
dkms2=$(grep '/taichi-dkms_.*_all\.deb$' "$work/build-v2.txt")
for deb in "$deb1" "$deb1arm" "$dkms1" "$deb2" "$dkms2"; do
  say "  $(basename "$deb")  $(stat -c %s "$deb") bytes, installed $(dpkg-deb -f "$deb" Installed-Size) KiB"
done

# --- lintian: no error or warning that is not overridden, and every override has a reason.
say "lintian"
for f in deploy/debian/*/lintian-overrides; do
  awk -v f="$f" '
    /^#/ { reason = 1; next }
    /^[[:space:]]*$/ { reason = 0; next }
    !reason { print f ": override without a reason above it: " $0; bad = 1 }
    END { exit bad }' "$f" || fail "every lintian override needs a comment giving its reason"
done
lintian_as=()
chmod 0755 "$work" "$work/v1"
if command -v runuser >/dev/null && id nobody >/dev/null 2>&1 &&
  runuser -u nobody -- test -r "$deb1" 2>/dev/null; then
  # lintian unpacks archives and warns against running as root: use nobody
  # when the checkout's path lets it read the packages.
  lintian_as=(runuser -u nobody -- env HOME=/tmp)
fi
set +e
"${lintian_as[@]}" lintian --pedantic -I --fail-on error,warning "$deb1" "$deb1arm" "$dkms1" >"$lintian_out" 2>&1
rc=$?
set -e
cat "$lintian_out"
[ "$rc" -eq 0 ] || fail "lintian reported errors or warnings (exit $rc, see $lintian_out)"
grep -q '^[EW]: ' "$lintian_out" && fail "lintian: errors or warnings not overridden"
say "  lintian --pedantic -I: $(grep -c '^[EWIPX]: ' "$lintian_out" || true) tags not overridden; overrides, each with its reason: deploy/debian/*/lintian-overrides"

# --- arm64: the package is for arm64 and its binary an aarch64 ELF.
say "arm64 package"
[ "$(dpkg-deb -f "$deb1arm" Architecture)" = arm64 ] || fail "$deb1arm: Architecture is not arm64"
dpkg-deb --info "$deb1arm" >"$work/arm64-info.txt"
dpkg-deb --contents "$deb1arm" >"$work/arm64-contents.txt"
grep -q ' \./usr/bin/taichi$' "$work/arm64-contents.txt" || fail "$deb1arm has no ./usr/bin/taichi"
dpkg-deb --fsys-tarfile "$deb1arm" | tar -xO ./usr/bin/taichi >"$work/taichi-arm64"
elf_machine() { od -An -t u2 -j 18 -N 2 "$1" | tr -d ' '; } # e_machine: 62 x86-64, 183 AArch64
[ "$(head -c 4 "$work/taichi-arm64" | od -An -c | tr -d ' ')" = '177ELF' ] || fail "arm64 taichi is not an ELF file"
[ "$(elf_machine "$work/taichi-arm64")" = 183 ] || fail "arm64 taichi: e_machine $(elf_machine "$work/taichi-arm64"), want 183 (AArch64)"
file -b "$work/taichi-arm64" | tee "$work/arm64-file.txt"
grep -q 'ARM aarch64' "$work/arm64-file.txt" || fail "file(1) does not see an aarch64 binary"

# --- install
# Only paths with taichi in their name: the packages and their scripts create
# nothing else, and other work on this machine may change the rest.
snapshot() {
  find /etc /usr/bin /usr/sbin /usr/share/doc /usr/share/lintian /usr/src /lib/systemd /usr/lib/systemd \
    /lib/modules /var/lib/systemd /var/lib/dkms /var/lib/taichi /run/taichi 2>/dev/null | grep -i taichi | LC_ALL=C sort || true
}
snapshot >"$work/before.txt"
mkdir -p "$marker_dir"
echo "$ver1" >"$marker"

say "dpkg -i $(basename "$deb1") $(basename "$dkms1")"
dpkg -i "$deb1" "$dkms1" </dev/null >"$work/install.txt" 2>&1 || { cat "$work/install.txt"; fail "dpkg -i failed"; }
cat "$work/install.txt"
[ "$(pkg_state taichi)" = installed ] || fail "taichi not installed: $(pkg_state taichi)"
grep -q 'installed and enabled, not started' "$work/install.txt" || fail "postinst did not say how to start the service"
[ "$(/usr/bin/taichi --version)" = "taichi version $tver1" ] || fail "installed binary reports $(/usr/bin/taichi --version), want $tver1"
wants=/etc/systemd/system/multi-user.target.wants/taichi.service
[ "$(readlink "$wants")" = /lib/systemd/system/taichi.service ] || fail "unit not enabled: $wants -> $(readlink "$wants" || true)"
for pid in $(ls /proc | grep -E '^[0-9]+$'); do
  if [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = /usr/bin/taichi ]; then
    fail "postinst started taichi (pid $pid) before the operator edited the config"
  fi
done

if command -v systemd-analyze >/dev/null; then
  say "systemd-analyze verify /lib/systemd/system/taichi.service"
  out=$(systemd-analyze verify /lib/systemd/system/taichi.service 2>&1) || fail "systemd-analyze verify: $out"
  [ -z "$out" ] || fail "systemd-analyze verify complains: $out"
else
  say "SKIP systemd-analyze verify: systemd-analyze not installed (package systemd)"
fi
grep -q '^ExecStart=/usr/bin/taichi run --config /etc/taichi/taichi.yaml$' /lib/systemd/system/taichi.service ||
  fail "installed unit does not run /usr/bin/taichi with /etc/taichi/taichi.yaml"

say "taichi config validate /etc/taichi/taichi.yaml"
/usr/bin/taichi config validate /etc/taichi/taichi.yaml
cmp -s <(/usr/bin/taichi config default) /etc/taichi/taichi.yaml || fail "the conffile is not the embedded default"
[ "$(dpkg-query -W -f='${Conffiles}' taichi | awk '{print $1}' | tr -d '\n')" = /etc/taichi/taichi.yaml ] ||
  fail "dpkg does not list /etc/taichi/taichi.yaml as the conffile"

# DKMS: the postinst built the module for every kernel with headers; build it
# again by hand against the Debian headers and check what came out.
kver=
for h in $(ls -d /usr/src/linux-headers-*-amd64 2>/dev/null | sort -V -r); do
  if [ -f "$h/Makefile" ] && [ -d "/lib/modules/${h#/usr/src/linux-headers-}" ]; then
    kver=${h#/usr/src/linux-headers-}
    break
  fi
done
if ! command -v dkms >/dev/null; then
  say "SKIP dkms build: dkms not installed"
elif [ -z "$kver" ]; then
  say "SKIP dkms build: no Debian linux-headers-*-amd64 with a /lib/modules directory (install linux-headers-amd64)"
else
  say "dkms build -m taichi -v $ver1 -k $kver"
  [ -f "/usr/src/taichi-$ver1/dkms.conf" ] || fail "no /usr/src/taichi-$ver1/dkms.conf"
  dkms status -m taichi -v "$ver1" -k "$kver" | tee "$work/dkms-status.txt"
  grep -q "^taichi/$ver1, $kver, x86_64: installed" "$work/dkms-status.txt" || fail "postinst did not build and install taichi/$ver1 for $kver"
  dkms build -m taichi -v "$ver1" -k "$kver" --force >"$work/dkms-build.txt" 2>&1 || { cat "$work/dkms-build.txt"; fail "dkms build failed"; }
  ko=$(ls /var/lib/dkms/taichi/"$ver1"/"$kver"/x86_64/module/taichi.ko* 2>/dev/null | head -1)
  [ -n "$ko" ] || fail "dkms build produced no taichi.ko"
  vermagic=$(modinfo -F vermagic "$ko")
  [ "${vermagic%% *}" = "$kver" ] || fail "taichi.ko built for '$vermagic', want $kver"
  say "  $ko: vermagic $vermagic"
fi

# --- upgrade keeps an edited conffile
say "edit the conffile, upgrade to $ver2"
sed -i 's/^policy: taichi$/policy: static/' /etc/taichi/taichi.yaml
echo "# edited by the operator before the upgrade" >>/etc/taichi/taichi.yaml
grep -q '^policy: static$' /etc/taichi/taichi.yaml || fail "could not edit the conffile (no 'policy: taichi' line?)"
cp /etc/taichi/taichi.yaml "$work/edited.yaml"
dpkg -i "$deb2" "$dkms2" </dev/null >"$work/upgrade.txt" 2>&1 || { cat "$work/upgrade.txt"; fail "upgrade failed"; }
cat "$work/upgrade.txt"
[ "$(dpkg-query -W -f='${Version}' taichi)" = "$ver2" ] || fail "taichi not upgraded to $ver2"
[ "$(/usr/bin/taichi --version)" = "taichi version $tver2" ] || fail "upgraded binary reports $(/usr/bin/taichi --version)"
cmp -s "$work/edited.yaml" /etc/taichi/taichi.yaml || fail "the upgrade changed the edited /etc/taichi/taichi.yaml"
ls /etc/taichi/*.dpkg-* >/dev/null 2>&1 && fail "the upgrade left $(ls /etc/taichi/*.dpkg-*)"
/usr/bin/taichi config validate /etc/taichi/taichi.yaml
grep -q 'installed and enabled, not started' "$work/upgrade.txt" && fail "an upgrade printed the first-install message"
if command -v dkms >/dev/null && [ -n "$kver" ]; then
  dkms status -m taichi >"$work/dkms-status2.txt"
  grep -q "^taichi/$ver2, $kver, x86_64: installed" "$work/dkms-status2.txt" || fail "taichi/$ver2 not built by DKMS after the upgrade: $(cat "$work/dkms-status2.txt")"
  grep -q "^taichi/$ver1," "$work/dkms-status2.txt" && fail "taichi/$ver1 still in DKMS after the upgrade"
  [ -e "/usr/src/taichi-$ver1" ] && fail "/usr/src/taichi-$ver1 left after the upgrade"
fi

# --- remove: only the conffile and the unit's enable/mask state stay (Debian keeps both until purge).
say "dpkg -r"
dpkg -r taichi-dkms taichi </dev/null >"$work/remove.txt" 2>&1 || { cat "$work/remove.txt"; fail "dpkg -r failed"; }
[ "$(pkg_state taichi)" = config-files ] || fail "taichi after dpkg -r: $(pkg_state taichi), want config-files"
case $(pkg_state taichi-dkms) in absent | not-installed) ;; *) fail "taichi-dkms after dpkg -r: $(pkg_state taichi-dkms)" ;; esac
cmp -s "$work/edited.yaml" /etc/taichi/taichi.yaml || fail "dpkg -r removed or changed the conffile"
snapshot | comm -13 "$work/before.txt" - >"$work/after-remove.txt"
grep -v -x -e /etc/taichi -e /etc/taichi/taichi.yaml \
  -e /etc/systemd/system/taichi.service \
  -e /etc/systemd/system/multi-user.target.wants/taichi.service \
  -e '/var/lib/systemd/deb-systemd-helper-enabled/.*taichi.service.*' \
  -e /var/lib/systemd/deb-systemd-helper-masked/taichi.service \
  "$work/after-remove.txt" >"$work/left-after-remove.txt" || true
[ -s "$work/left-after-remove.txt" ] && fail "dpkg -r left: $(cat "$work/left-after-remove.txt")"
say "  kept until purge: $(tr '\n' ' ' <"$work/after-remove.txt")"

# --- purge: nothing at all.
say "dpkg -P"
dpkg -P taichi taichi-dkms </dev/null >"$work/purge.txt" 2>&1 || { cat "$work/purge.txt"; fail "dpkg -P failed"; }
case $(pkg_state taichi) in absent | not-installed) ;; *) fail "taichi after dpkg -P: $(pkg_state taichi)" ;; esac
snapshot | comm -13 "$work/before.txt" - >"$work/after-purge.txt"
[ -s "$work/after-purge.txt" ] && fail "dpkg -P left: $(cat "$work/after-purge.txt")"
ls /var/lib/dpkg/info/taichi.* /var/lib/dpkg/info/taichi-dkms.* >/dev/null 2>&1 && fail "dpkg still has control files for taichi"
rm -f "$marker"
rmdir "$marker_dir" 2>/dev/null || true
say "PASS"
