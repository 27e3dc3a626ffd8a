#!/usr/bin/env bash
# Profiles the reference server's fan-out hot path with callgrind.
#
#   bash crates/bench/profile-fanout.sh [OUT_DIR]      (default target/bench-profile)
#
# Why callgrind: `perf stat -e instructions` is not supported on the VMs this
# project runs on (no PMU), so there are no hardware counters to sample;
# callgrind counts instructions exactly instead. It slows the server about
# 50x, so the load is small (2 rooms x 100 members, 20 publishes/s = 2,000
# deliveries/s) and only the steady state is collected: the server starts
# with instrumentation off (logins and joins are not profiled) and it is
# switched on once messages flow, for PROFILE_SECONDS, then dumped.
#
# Output: OUT_DIR/callgrind.out.* and OUT_DIR/annotate.txt (inclusive costs).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:-target/bench-profile}
seconds=${PROFILE_SECONDS:-20}
mkdir -p "$out"
rm -f "$out"/callgrind.out*
data=$(mktemp -d)

BIN=${BIN:-target/release}
[ -n "${SKIP_BUILD:-}" ] || cargo build --release -p confab-server -p confab-bench

valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out/callgrind.out" \
  "$BIN/confab-server" --listen 127.0.0.1:0 --data-dir "$data" \
  --send-rate 1000000 --send-burst 1000000 >"$out/server.out" 2>"$out/server.log" &
server=$!
cleanup() {
  kill -TERM "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  rm -rf "$data"
}
trap cleanup EXIT

# The server prints its address once it listens; wait for it (bounded).
url=""
for _ in $(seq 1 600); do
  url=$(sed -n 's/.*listening on //p' "$out/server.out")
  [ -n "$url" ] && break
  sleep 0.5
done
[ -n "$url" ] || { echo "server did not start; see $out/server.log" >&2; exit 1; }
echo "server (under callgrind) at $url, pid $server"

"$BIN/confab-bench" --server "$url" --no-progress fanout \
  --rooms 2 --members 100 --rate 20 --warmup 0 --duration $((seconds + 40)) --drain 60 \
  --p99-target-ms 100000 >"$out/bench.txt" 2>&1 &
bench=$!

# Collect from the first stored message on (bounded wait).
for _ in $(seq 1 1200); do
  stored=$(curl -fs "$url/metrics" | awk '/^confab_messages_stored_total /{print $2}')
  [ "${stored:-0}" -gt 0 ] && break
  sleep 0.5
done
callgrind_control -i on "$server" >/dev/null
echo "collecting for ${seconds}s"
sleep "$seconds"
callgrind_control -i off "$server" >/dev/null
callgrind_control -d "$server" >/dev/null
wait "$bench" || true
cat "$out/bench.txt"

dump=$(ls -t "$out"/callgrind.out* | head -1)
callgrind_annotate --inclusive=yes "$dump" >"$out/annotate-full.txt"
head -80 "$out/annotate-full.txt" >"$out/annotate.txt"
callgrind_annotate "$dump" >"$out/self-full.txt"
head -60 "$out/self-full.txt" >"$out/self.txt"
echo "wrote $out/annotate.txt (inclusive) and $out/self.txt (self cost) from $dump"
