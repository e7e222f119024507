#!/usr/bin/env bash
# VM-startup helper in bash, as CP ecosystems have many: checks the VM's
# config file and burns CPU in proportion to the VM's size (the arithmetic
# stands for the template rendering and bookkeeping such scripts do).
set -euo pipefail
config=$1
size=$2
grep -q '"netns"' "$config" || { echo "helper.sh: $config has no netns" >&2; exit 1; }
n=$((size * 15000))
acc=0
for ((i = 0; i < n; i++)); do
  acc=$(((acc * 31 + i) % 1000003))
done
echo "$acc"
