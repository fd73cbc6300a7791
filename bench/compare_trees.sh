#!/bin/bash
# The benchmarks for two trees of certkit in one run, alternating (the VM's noise hits both alike).
# Usage: bench/compare_trees.sh BEFORE_TREE [AFTER_TREE]   e.g. after `git worktree add ../base 6acc82c`:
#        bench/compare_trees.sh ../base .
set -u
before=$(cd "$1" && pwd); after=$(cd "${2:-.}" && pwd)
py=${PYTHON:-$after/.venv/bin/python}
for round in 1 2; do
  for tree in "$before" "$after"; do
    echo "=== $tree verify, round $round"
    (cd "$tree" && PYTHONPATH="$tree" "$py" bench/bench_verify.py --rounds 5 --big 2000)
    echo "=== $tree probe, round $round"
    (cd "$tree" && PYTHONPATH="$tree" "$py" bench/bench_probe.py --endpoints 200 --rounds 3 --skip-sslyze --skip-finger)
  done
done
for tree in "$before" "$after"; do
  echo "=== $tree issuance"
  (cd "$tree" && PYTHONPATH="$tree" "$py" bench/bench_ca.py --rsa 5 --ec 300 --names 100)
done
