#!/usr/bin/env bash
# Profiles the *generator's* receive path with callgrind, against the ceiling.
#
#   bash crates/bench/profile-generator.sh [BIN] [OUT]
#     BIN  confab-bench binary   (default target/release/confab-bench)
#     OUT  output prefix         (default target/bench-profile/generator)
#
# The generator runs under callgrind (~50x slower), so the load is small:
# 10 rooms x 100 members at 20 publishes/s = 2,000 pushes/s. The ceiling it
# spawns is not instrumented (valgrind does not follow the child). Collection
# is switched on after SETUP_SECONDS (1,000 sockets connect first) for
# PROFILE_SECONDS of steady state, then dumped. Divide the totals by the
# `record_n_inner` calls (one per push or ack received) for instructions
# per event; compare `recv` calls with it: a generator that falls behind
# reads several pushes per recv, which lowers its cost per push.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-${CARGO_TARGET_DIR:-target}/release/confab-bench}
out=${2:-target/bench-profile/generator}
setup=${SETUP_SECONDS:-45}
seconds=${PROFILE_SECONDS:-15}
mkdir -p "$(dirname "$out")"
rm -f "$out".cg*
taskset -c 1 valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out.cg" \
  "$bin" --server-cpus 0 --vs ceiling --no-confab --no-progress fanout \
  --rooms 10 --members 100 --rate 20 --duration $((setup + seconds + 10)) --warmup 0 \
  --p99-target-ms 100000 >"$out.txt" 2>&1 &
vg=$!
sleep "$setup"
callgrind_control -i on "$vg" >/dev/null
sleep "$seconds"
callgrind_control -i off "$vg" >/dev/null
callgrind_control -d "$vg" >/dev/null
wait "$vg" || true
grep -E "fanout|sustained" "$out.txt" || cat "$out.txt"
dump=$(ls "$out".cg.* | head -1)
callgrind_annotate "$dump" >"$out.self.txt"
echo "self costs in $out.self.txt (from $dump)"
