#!/usr/bin/env bash
# The timings of BENCHMARKS.md "Operations" (issue 7): wall time of each command, one after another.
# Uses throwaway workspaces under /tmp; run from anywhere with the venv built (make install).
set -u
cd "$(dirname "$0")/.."
O=.venv/bin/onenet
t() { local s=$(date +%s.%N); "$@" > /tmp/ops_last.log 2>&1; local rc=$?; echo "TIME $(echo "$(date +%s.%N) - $s" | bc) rc=$rc :: $*"; }
t $O -w /tmp/w3 train --n-images 1500 --epochs 10
t $O -w /tmp/w3 train --gate --n-images 1500 --epochs 4
grep -A8 "candidate" /tmp/ops_last.log | head -12
t $O -w /tmp/w3 status --runs 0
rm -rf /tmp/d1 /tmp/d2
t $O -w /tmp/d1 train --n-images 2000 --epochs 1
grep -E "features:|encode-shard" /tmp/ops_last.log | tail -3
t $O -w /tmp/d2 train --n-images 2000 --epochs 1 --runner dask --dask-workers 2
grep -E "encode-shard" /tmp/ops_last.log | tail -3
(.venv/bin/onenet -w /tmp/w3 server --port 4312 > /tmp/srv3.log 2>&1 &)
sleep 15
t $O -w /tmp/w3 train --n-images 1500 --epochs 10
t $O -w /tmp/w3 status
pkill -f "onenet -w /tmp/w3 server"
