#!/bin/sh
# kmod-guest.sh: the kernel module's checks inside a qemu guest (busybox sh).
# scripts/kmod-qemu-test.sh stages DIR (taichi.ko, the static qemutest and
# taichi binaries, kfunc_arg naming the BPF kfunc object or empty) and
# runs this from its initramfs; scripts/kernel-matrix.sh runs it as the
# module step of each kernel's guest. It prints the qemutest summary and
# ends with TAICHI-KMOD-PASS or TAICHI-KMOD-FAIL (exit 0 or 1).
#
# Usage: kmod-guest.sh DIR
dir=${1:?usage: kmod-guest.sh DIR}
ok=1
say() { echo "kmod-qemu: $*"; }
fail() { echo "kmod-qemu: FAIL: $*"; ok=0; }
say "kernel $(uname -r), $(grep -c ^processor /proc/cpuinfo) CPUs"
kfunc=$(cat "$dir/kfunc_arg" 2>/dev/null)
[ -n "$kfunc" ] && kfunc=$dir/$kfunc
if [ "$(cat "$dir/preempt_count" 2>/dev/null)" = 0 ]; then
  export QEMUTEST_NO_PREEMPT_COUNT=1
fi
if insmod "$dir/taichi.ko" test_hold=1; then
  if [ ! -c /dev/taichi ]; then
    mm=$(cat /sys/class/misc/taichi/dev)
    mknod -m 600 /dev/taichi c "${mm%%:*}" "${mm##*:}"
  fi
  mode=$(stat -c %a /dev/taichi)
  [ "$mode" = 600 ] || fail "/dev/taichi mode $mode, want 600"
  # shellcheck disable=SC2086 # no kfunc object: no argument
  "$dir/qemutest" run $kfunc || fail "qemutest run"
  if [ -x "$dir/taichi" ]; then
    say "cli begin"
    "$dir/taichi" kmod stats --cpu 1 || fail "taichi kmod stats"
    "$dir/taichi" kmod blockers --cpu 1 >/tmp/blockers.txt || fail "taichi kmod blockers"
    cat /tmp/blockers.txt
    grep -q taichi_test_hold_spin /tmp/blockers.txt || fail "taichi kmod blockers does not show the test hold record"
    "$dir/taichi" kmod blockers --json --consume >/tmp/blockers.json || fail "taichi kmod blockers --json"
    grep -q 'taichi_test_hold_spin' /tmp/blockers.json || fail "JSON lacks the record"
    say "cli end"
  fi

  # Unload safety: the module cannot go while a DP thread is registered
  # through an open fd; killing the holder (thread dies inside WAIT) frees it.
  "$dir/qemutest" hold-open >/tmp/hold.log 2>&1 &
  holder=$!
  i=0
  while ! grep -q HOLDING /tmp/hold.log && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
  grep -q HOLDING /tmp/hold.log || fail "hold-open did not register: $(cat /tmp/hold.log)"
  if rmmod taichi 2>/dev/null; then fail "rmmod succeeded while a DP thread was registered"; fi
  kill -9 $holder
  wait $holder 2>/dev/null
  rmmod taichi || fail "rmmod after the holder died"
  [ -e /sys/module/taichi ] && fail "module still loaded"
  say "unload ok"
else
  fail "insmod"
fi
say "dmesg begin"
dmesg
say "dmesg end"
taint=$(cat /proc/sys/kernel/tainted)
say "tainted=$taint"
# W (warning, 512) or D (oops, 128); O/E (out-of-tree, unsigned) are expected.
[ $((taint & 640)) -eq 0 ] || fail "kernel tainted by a warning or an oops ($taint)"
if [ $ok = 1 ]; then echo "TAICHI-KMOD-PASS"; exit 0; fi
echo "TAICHI-KMOD-FAIL"
exit 1
