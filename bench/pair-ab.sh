#!/usr/bin/env bash
# bench/pair-ab.sh: compares repcached builds as a pair, in interleaved runs. For each build
# and round it starts a fresh pair (both nodes on the server CPU), drives node 1 with mcload
# and reads both nodes' CPU time from /proc. Prints, per build, the medians of ops/s and of
# CPU microseconds per operation of node 1, of its peer, and of both: on a noisy shared
# machine, interleaving and medians are what make a few percent visible.
#
# Usage: bench/pair-ab.sh [--rounds N] [--get-ratio R] [--value-size B] [--pipeline D]
#                         [--duration S] BUILD...
# Every server listens on 127.0.0.1 only and is stopped by its PID; each load run is
# bounded by mcload's own duration and by timeout(1).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MCLOAD="$ROOT/bench/loadgen/target/release/mcload"
ROUNDS=5
GET_RATIO=0
VALUE_SIZE=100
PIPELINE=16
DURATION=4
KEYS=10000
SERVER_CPUS=0
CLIENT_CPUS=1
USER_FLAG=()
[ "$(id -u)" = 0 ] && USER_FLAG=(-u root)

usage() {
    sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
    case "$1" in
        --rounds) ROUNDS=$2; shift 2 ;;
        --get-ratio) GET_RATIO=$2; shift 2 ;;
        --value-size) VALUE_SIZE=$2; shift 2 ;;
        --pipeline) PIPELINE=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        -*) echo "pair-ab.sh: unknown option $1" >&2; usage >&2; exit 64 ;;
        *) break ;;
    esac
done
[ $# -ge 1 ] || { usage >&2; exit 64; }
for b in "$@"; do
    [ -x "$b" ] || { echo "pair-ab.sh: $b is not an executable" >&2; exit 64; }
done
if [ ! -x "$MCLOAD" ]; then
    (cd "$ROOT/bench/loadgen" && cargo build --release --quiet)
fi

PIDS=()
stop_all() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    PIDS=()
}
trap stop_all EXIT

# run_pair runs in a command substitution, where the EXIT trap does not fire: stop what it
# started before leaving.
die() {
    stop_all
    echo "pair-ab.sh: $*" >&2
    exit 1
}
# shellcheck source=bench/common.sh
source "$ROOT/bench/common.sh"
link_state() { stat_field "$(stats_of "$1")" repl_link_state; }

# run_pair BUILD: one measured run; prints "ops all_ops node1_ticks peer_ticks" (ops: in
# the measured phase, for the rate; all_ops: every reply of the run, for CPU per op).
run_pair() {
    local bin=$1 p1 p2 r1 r2 n1 n2 i t1 t2 u1 u2 line
    p1=$(free_port); p2=$(free_port); r1=$(free_port); r2=$(free_port)
    taskset -c "$SERVER_CPUS" "$bin" -p "$p1" -l 127.0.0.1 -t 1 -m 1024 -c 1024 "${USER_FLAG[@]}" \
        -X "$r1" -x "127.0.0.1:$r2" >/dev/null 2>&1 &
    n1=$!; PIDS+=("$n1")
    for i in $(seq 1 100); do port_open "$p1" && break; sleep 0.02; done
    port_open "$p1" || die "$bin did not open port $p1"
    taskset -c "$SERVER_CPUS" "$bin" -p "$p2" -l 127.0.0.1 -t 1 -m 1024 -c 1024 "${USER_FLAG[@]}" \
        -X "$r2" -x "127.0.0.1:$r1" >/dev/null 2>&1 &
    n2=$!; PIDS+=("$n2")
    local linked=
    for i in $(seq 1 200); do
        if [ "$(link_state "$p2")" = connected ] && [ "$(link_state "$p1")" = connected ]; then
            linked=1
            break
        fi
        sleep 0.05
    done
    [ -n "$linked" ] || die "the pair of $bin did not link up"
    local load=(--port "$p1" --conns 50 --pipeline "$PIPELINE" --value-size "$VALUE_SIZE"
        --get-ratio "$GET_RATIO" --keys "$KEYS" --key-size 32 --output kv)
    timeout 60 taskset -c "$CLIENT_CPUS" "$MCLOAD" "${load[@]}" --preload --ops 0 >/dev/null
    t1=$(cpu_ticks "$n1"); t2=$(cpu_ticks "$n2")
    line=$(timeout $((DURATION + 30)) taskset -c "$CLIENT_CPUS" "$MCLOAD" "${load[@]}" \
        --duration "$DURATION" | tr ' ' '\n') || true
    u1=$(cpu_ticks "$n1"); u2=$(cpu_ticks "$n2")
    stop_all
    echo "$(awk -F= '$1 == "ops" {print $2}' <<<"$line" | grep . || echo 0)" \
        "$(awk -F= '$1 == "all_ops" {print $2}' <<<"$line" | grep . || echo 0)" \
        "$((u1 - t1)) $((u2 - t2))"
}

RAW=$(mktemp)
for r in $(seq 1 "$ROUNDS"); do
    for b in "$@"; do
        res=$(run_pair "$b") || exit 1
        echo "$b $res" >>"$RAW"
    done
done
HZ=$(getconf CLK_TCK)
echo "pair A/B: get ratio $GET_RATIO, ${VALUE_SIZE} B values, pipeline $PIPELINE, ${DURATION} s runs, $ROUNDS rounds; both nodes on CPU $SERVER_CPUS, mcload on CPU $CLIENT_CPUS"
echo "build | ops/s | CPU us/op: node 1, peer, both (medians) | both, every run"
python3 - "$RAW" "$HZ" "$DURATION" <<'PY'
import statistics as st, sys
raw, hz, dur = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
runs = {}
for line in open(raw):
    b, ops, all_ops, t1, t2 = line.split()
    ops, all_ops = int(ops), int(all_ops)
    if ops == 0 or all_ops == 0:
        continue
    us = lambda t: int(t) * 1e6 / hz / all_ops
    runs.setdefault(b, []).append((ops / dur, us(t1), us(t2)))
for b, v in runs.items():
    m = lambda i: st.median(x[i] for x in v)
    both = sorted(round(x[1] + x[2], 2) for x in v)
    print(f"{b} | {m(0):.0f} | {m(1):.2f} {m(2):.2f} {st.median(x[1] + x[2] for x in v):.2f} | {both}")
PY
rm -f "$RAW"
