#!/usr/bin/env bash
# bench/run.sh: the side-by-side benchmark harness. Starts memcached-compatible servers
# (default: memcached as A, repcached as B, and a repcached pair) with the same flags,
# drives them with mcload in alternating runs, and prints medians, ranges and ratios for
# throughput, tail latency, server CPU per operation and memory per item (scenarios 1-3),
# and for the pair: start-up copy time (4) and replication lag under load (5).
#
# Usage: bench/run.sh [options]     (bench/run.sh --help lists them)
# Every server it starts listens on 127.0.0.1 only and is stopped by its PID; a trap
# stops them on any exit. Every load run is bounded by mcload --timeout and by timeout(1).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MCLOAD="$ROOT/bench/loadgen/target/release/mcload"
MCPROBE="$ROOT/bench/loadgen/target/release/mcprobe"

A_CMD=${A_CMD:-$(command -v memcached || echo /usr/bin/memcached)}
A_NAME=${A_NAME:-memcached}
B_CMD=${B_CMD:-"$ROOT/target/release/repcached"}
B_NAME=${B_NAME:-repcached}
REPEATS=${REPEATS:-3}
DURATION=${DURATION:-4}
WARMUP=${WARMUP:-1}
SERVER_THREADS=${SERVER_THREADS:-1}
SERVER_MEM=${SERVER_MEM:-1024}
SERVER_MAXCONN=${SERVER_MAXCONN:-1024}
CONNS=${CONNS:-50}
CLIENT_THREADS=${CLIENT_THREADS:-1}
KEYS=${KEYS:-10000}
KEY_SIZE=${KEY_SIZE:-32}
MEM_ITEMS=${MEM_ITEMS:-1000000}
ONLY=${ONLY:-}
SCENARIOS=${SCENARIOS:-1,2,3,4,5}
PAIR_CMD=${PAIR_CMD:-}
PAIR_NAME=${PAIR_NAME:-}
BOOT_ITEMS=${BOOT_ITEMS:-"100000 1000000"}
BOOT_PIPELINE=${BOOT_PIPELINE:-1}
BOOT_TIMEOUT=${BOOT_TIMEOUT:-60}
BOOT_B_CPUS=${BOOT_B_CPUS:-}
PEER_CPUS=${PEER_CPUS:-}
LAG_DURATION=${LAG_DURATION:-10}
LAG_PIPELINE=${LAG_PIPELINE:-16}
LAG_PROBES=${LAG_PROBES:-5000}
LAG_GAP_MS=${LAG_GAP_MS:-2}
QUICK=0
OUT=${OUT:-}
SERVER_CPUS=${SERVER_CPUS:-}
CLIENT_CPUS=${CLIENT_CPUS:-}

usage() {
    cat <<EOF
usage: bench/run.sh [options]
  --a CMD            server A command, without -p/-l/-t/-m/-c/-u   (default: $A_CMD)
  --a-name NAME      label for A                                    (default: $A_NAME)
  --b CMD            server B command                               (default: $B_CMD)
  --b-name NAME      label for B                                    (default: $B_NAME)
  --repeats N        runs per server per scenario                   (default: $REPEATS)
  --duration S       measured seconds per run                       (default: $DURATION)
  --warmup S         unrecorded load before each measured run       (default: $WARMUP)
  --server-threads T server -t                                      (default: $SERVER_THREADS)
  --server-mem MB    server -m for the throughput scenarios         (default: $SERVER_MEM)
  --conns N          client connections                             (default: $CONNS)
  --client-threads T mcload threads                                 (default: $CLIENT_THREADS)
  --keys K           key space of the throughput scenarios          (default: $KEYS)
  --mem-items N      items loaded in the memory scenario            (default: $MEM_ITEMS)
  --scenarios LIST   which scenarios to run, comma-separated         (default: $SCENARIOS)
                       1 throughput, no peer: A vs B
                       2 throughput of a repcached pair node (peer running) vs A
                       3 memory per item: A vs B
                       4 bootstrap: start-up copy time of a new node, and the
                         serving node's get throughput during the copy
                       5 replication lag under load (set on one node, get on the peer)
  --only REGEX       run only throughput rows (scenarios 1, 2) whose name matches
  --skip-perf        drop scenarios 1 and 2
  --skip-memory      drop scenario 3
  --pair CMD         repcached command for scenarios 2, 4, 5 (default: the release build)
  --pair-name NAME   label for the pair node in scenario 2     (default: <b-name>+peer)
  --boot-items LIST  item counts of scenario 4, space-separated    (default: $BOOT_ITEMS)
  --boot-pipeline D  pipeline of the get load in scenario 4       (default: $BOOT_PIPELINE)
  --boot-timeout S   longest wait for a bootstrapping node        (default: $BOOT_TIMEOUT)
  --boot-b-cpus L    scenario 4: pin the starting node B here instead of on the server
                     CPUs (e.g. the client CPU: a pair on two machines, each node its own core)
  --peer-cpus L      scenarios 2 and 5: pin node 2 (the peer of the measured node) here
                     instead of on the server CPUs; it then shares them with the client
  --lag-duration S   probing time per load mix in scenario 5      (default: $LAG_DURATION)
  --lag-pipeline D   pipeline of the load in scenario 5           (default: $LAG_PIPELINE)
  --lag-probes N     most probes per load mix                     (default: $LAG_PROBES)
  --lag-gap-ms MS    pause between two probes                     (default: $LAG_GAP_MS)
  --server-cpus L    taskset CPU list for servers   (default: first half of the CPUs)
  --client-cpus L    taskset CPU list for mcload    (default: second half)
  --out DIR          where raw results and server logs go (default: a new /tmp dir)
  --quick            a smoke test of the harness: 1 repeat, 2 s runs, 0.5 s warm-up,
                     100,000 items in scenario 3, 20,000 in scenario 4, 2 s of probing
Validation (same server twice, ratios should be near 1.00):
  bench/run.sh --b /usr/bin/memcached --b-name memcached-again
EOF
}

while [ $# -gt 0 ]; do
    case "$1" in
        --a) A_CMD=$2; shift 2 ;;
        --a-name) A_NAME=$2; shift 2 ;;
        --b) B_CMD=$2; shift 2 ;;
        --b-name) B_NAME=$2; shift 2 ;;
        --repeats) REPEATS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --warmup) WARMUP=$2; shift 2 ;;
        --server-threads) SERVER_THREADS=$2; shift 2 ;;
        --server-mem) SERVER_MEM=$2; shift 2 ;;
        --conns) CONNS=$2; shift 2 ;;
        --client-threads) CLIENT_THREADS=$2; shift 2 ;;
        --keys) KEYS=$2; shift 2 ;;
        --mem-items) MEM_ITEMS=$2; shift 2 ;;
        --only) ONLY=$2; shift 2 ;;
        --scenarios) SCENARIOS=$2; shift 2 ;;
        --skip-perf) SCENARIOS=${SCENARIOS//[12]/}; shift ;;
        --skip-memory) SCENARIOS=${SCENARIOS//3/}; shift ;;
        --pair) PAIR_CMD=$2; shift 2 ;;
        --pair-name) PAIR_NAME=$2; shift 2 ;;
        --boot-items) BOOT_ITEMS=$2; shift 2 ;;
        --boot-pipeline) BOOT_PIPELINE=$2; shift 2 ;;
        --boot-timeout) BOOT_TIMEOUT=$2; shift 2 ;;
        --boot-b-cpus) BOOT_B_CPUS=$2; shift 2 ;;
        --peer-cpus) PEER_CPUS=$2; shift 2 ;;
        --lag-duration) LAG_DURATION=$2; shift 2 ;;
        --lag-pipeline) LAG_PIPELINE=$2; shift 2 ;;
        --lag-probes) LAG_PROBES=$2; shift 2 ;;
        --lag-gap-ms) LAG_GAP_MS=$2; shift 2 ;;
        --server-cpus) SERVER_CPUS=$2; shift 2 ;;
        --client-cpus) CLIENT_CPUS=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --quick) QUICK=1; REPEATS=1; DURATION=2; WARMUP=0.5; MEM_ITEMS=100000
            BOOT_ITEMS=20000; LAG_DURATION=2; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run.sh: unknown option $1" >&2; usage >&2; exit 64 ;;
    esac
done

die() { echo "run.sh: $*" >&2; exit 1; }
log() { echo "# $*" >&2; }
# port_open, free_port, cpu_ticks, stats_of, stat_field (shared with pair-ab.sh).
# shellcheck source=bench/common.sh
source "$ROOT/bench/common.sh"

want() { [[ ",$SCENARIOS," == *",$1,"* ]]; }
[[ $SCENARIOS =~ ^[1-5,]*$ ]] || die "--scenarios takes numbers 1-5 separated by commas"
PAIR_CMD=${PAIR_CMD:-$ROOT/target/release/repcached}
PAIR_NAME=${PAIR_NAME:-$B_NAME+peer}
[ "$A_NAME" != "$B_NAME" ] || die "--a-name and --b-name must differ"
[ "$PAIR_NAME" != "$A_NAME" ] && [ "$PAIR_NAME" != "$B_NAME" ] || die "--pair-name must differ from A and B"
read -ra A_ARGV <<<"$A_CMD"
read -ra B_ARGV <<<"$B_CMD"
read -ra PAIR_ARGV <<<"$PAIR_CMD"
for bin in "${A_ARGV[0]}" "${B_ARGV[0]}" "${PAIR_ARGV[0]}"; do
    [ -x "$bin" ] || command -v "$bin" >/dev/null 2>&1 \
        || die "server binary $bin not found (repcached: cargo build --release)"
done

OUT=${OUT:-$(mktemp -d /tmp/mcbench.XXXXXX)}
mkdir -p "$OUT"
RAW="$OUT/raw.txt"
: >"$RAW"
CLK_TCK=$(getconf CLK_TCK)
NPROC=$(nproc)

# memcached refuses to start as root without -u; repcached keeps the same rule.
USER_FLAG=()
[ "$(id -u)" = 0 ] && USER_FLAG=(-u root)

# Server and client on disjoint cores, so neither steals the other's CPU and the CPU
# figures of each side mean what they say.
SERVER_PIN=()
CLIENT_PIN=()
if command -v taskset >/dev/null 2>&1 && [ "$NPROC" -ge 2 ]; then
    half=$((NPROC / 2))
    SERVER_CPUS=${SERVER_CPUS:-0-$((half - 1))}
    CLIENT_CPUS=${CLIENT_CPUS:-$half-$((NPROC - 1))}
    SERVER_PIN=(taskset -c "$SERVER_CPUS")
    CLIENT_PIN=(taskset -c "$CLIENT_CPUS")
else
    log "taskset unavailable or a single CPU: server and client share the CPUs"
    SERVER_CPUS="all"
    CLIENT_CPUS="all"
fi

# ---- server lifecycle ---------------------------------------------------------------

STARTED_PIDS=()

cleanup() {
    local pid
    for pid in "${STARTED_PIDS[@]}"; do
        stop_pid "$pid"
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

stop_pid() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}


# start_server NAME MEM ARGV... : sets SRV_PID and SRV_PORT.
start_server() {
    local name=$1 mem=$2 try port pid i pin=("${SERVER_PIN[@]}")
    shift 2
    if [ -n "${SRV_CPUS:-}" ]; then pin=(taskset -c "$SRV_CPUS"); fi
    for try in $(seq 1 20); do
        port=$((20000 + RANDOM % 40000))
        port_open "$port" && continue
        "${pin[@]}" "$@" -p "$port" -l 127.0.0.1 -t "$SERVER_THREADS" -m "$mem" \
            -c "$SERVER_MAXCONN" "${USER_FLAG[@]}" >>"$OUT/$name.log" 2>&1 &
        pid=$!
        STARTED_PIDS+=("$pid")
        for i in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            if port_open "$port"; then
                SRV_PID=$pid
                SRV_PORT=$port
                return 0
            fi
            sleep 0.05
        done
        # Died (port taken under us?) or never listened: try another port.
        stop_pid "$pid"
    done
    die "$name would not start; see $OUT/$name.log"
}


# start_bg NAME PORT MEM ARGV... : starts a server without waiting for its client port,
# for a node whose port opens only after its start-up copy. Sets BG_PID.
start_bg() {
    local name=$1 port=$2 mem=$3 pin=("${SERVER_PIN[@]}")
    shift 3
    if [ -n "${BG_CPUS:-}" ]; then pin=(taskset -c "$BG_CPUS"); fi
    "${pin[@]}" "$@" -p "$port" -l 127.0.0.1 -t "$SERVER_THREADS" -m "$mem" \
        -c "$SERVER_MAXCONN" "${USER_FLAG[@]}" >>"$OUT/$name.log" 2>&1 &
    BG_PID=$!
    STARTED_PIDS+=("$BG_PID")
}

# Replication flags of one pair node. The drain timeout keeps a stop within stop_pid's
# 5 s grace even when the other node is already gone.
pair_flags() { echo "-X $1 -x 127.0.0.1:$2 --repl-drain-timeout-ms 2000"; }

# Waits until both nodes report the link up (bounded). Returns 1 if it never came up.
wait_link() {
    local i st1 st2
    for i in $(seq 1 200); do
        st1=$(stats_of "$1")
        st2=$(stats_of "$2")
        if [ "$(stat_field "$st1" repl_link_state)" = connected ] \
            && [ "$(stat_field "$st2" repl_link_state)" = connected ]; then
            return 0
        fi
        sleep 0.05
    done
    return 1
}

# start_pair NAME MEM: node 1 starts first and serves alone (its peer is not up yet),
# node 2 then copies node 1's (empty) data and both link up. Sets N1_PID N1_PORT N2_PID
# N2_PORT, each node on the server CPUs like every other server (node 2 on --peer-cpus
# when given).
start_pair() {
    local name=$1 mem=$2 r1 r2 extra
    r1=$(free_port)
    r2=$(free_port)
    while [ "$r2" = "$r1" ]; do r2=$(free_port); done
    read -ra extra <<<"$(pair_flags "$r1" "$r2")"
    start_server "$name-node1" "$mem" "${PAIR_ARGV[@]}" "${extra[@]}"
    N1_PID=$SRV_PID N1_PORT=$SRV_PORT
    read -ra extra <<<"$(pair_flags "$r2" "$r1")"
    SRV_CPUS=$PEER_CPUS start_server "$name-node2" "$mem" "${PAIR_ARGV[@]}" "${extra[@]}"
    N2_PID=$SRV_PID N2_PORT=$SRV_PORT
    wait_link "$N1_PORT" "$N2_PORT" || die "$name: the pair did not link up; see $OUT/$name-node*.log"
}


# Busy ticks of all CPUs together, from /proc/stat (user nice system irq softirq steal).
busy_ticks() {
    local cpu user nice system idle iowait irq softirq steal rest
    read -r cpu user nice system idle iowait irq softirq steal rest </proc/stat
    echo $((user + nice + system + irq + softirq + steal))
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }


# ---- load -----------------------------------------------------------------------------

# mcload PORT ARGS... : prints the kv line; exit 2 means the run had errors.
mcload() {
    local port=$1
    shift
    timeout 600 "${CLIENT_PIN[@]}" "$MCLOAD" --port "$port" --output kv "$@"
}

# Median of numbers; "none" (a run that never got there) sorts above every number.
median() {
    printf '%s\n' "$@" | sed 's/^none$/inf/' | sort -g \
        | awk '{ v[NR] = $1 } END { if (NR == 0) { print "none"; exit }
            m = (NR % 2) ? v[(NR + 1) / 2] : ((v[NR / 2] == "inf" || v[NR / 2 + 1] == "inf") ? "inf" : (v[NR / 2] + v[NR / 2 + 1]) / 2)
            print (m == "inf") ? "none" : m }'
}

kv() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k {print $2}'; }

# ---- the run ---------------------------------------------------------------------------

log "building mcload"
cargo build --release --quiet --manifest-path "$ROOT/bench/loadgen/Cargo.toml"

{
    echo "machine: $NPROC CPUs, $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), kernel $(uname -r)"
    echo "A: $A_NAME = $A_CMD ($("${A_ARGV[@]}" -V 2>/dev/null | head -1 || true))"
    echo "B: $B_NAME = $B_CMD ($("${B_ARGV[@]}" -V 2>/dev/null | head -1 || true))"
    echo "pair (scenarios 2, 4, 5): $PAIR_NAME = $PAIR_CMD, node 1 on the server CPUs, node 2 on CPUs ${PEER_CPUS:-$SERVER_CPUS}; scenarios run: $SCENARIOS"
    echo "server flags: -t $SERVER_THREADS -m $SERVER_MEM -c $SERVER_MAXCONN ${USER_FLAG[*]} on 127.0.0.1; server CPUs $SERVER_CPUS, client CPUs $CLIENT_CPUS"
    echo "load: $CONNS conns, $CLIENT_THREADS client thread(s), $KEYS keys of $KEY_SIZE B, ${DURATION}s runs after ${WARMUP}s warm-up, $REPEATS repeats, alternating between servers"
    echo "raw results and server logs: $OUT"
} | tee "$OUT/header.txt"

# Sides of the throughput rounds: A always (the reference), B for scenario 1, P (node 1 of
# a repcached pair, its peer node 2 running on the server CPUs too) for scenario 2.
SIDES=()
if want 1 || want 2; then
    SIDES=(A)
    if want 1; then SIDES+=(B); fi
    if want 2; then SIDES+=(P); fi
fi
P_NAME=$PAIR_NAME

if [ ${#SIDES[@]} -gt 0 ]; then
    start_server "$A_NAME" "$SERVER_MEM" "${A_ARGV[@]}"
    A_PID=$SRV_PID A_PORT=$SRV_PORT
    log "$A_NAME pid $A_PID port $A_PORT"
    if want 1; then
        start_server "$B_NAME" "$SERVER_MEM" "${B_ARGV[@]}"
        B_PID=$SRV_PID B_PORT=$SRV_PORT
        log "$B_NAME pid $B_PID port $B_PORT"
    fi
    if want 2; then
        start_pair "$P_NAME" "$SERVER_MEM"
        P_PID=$N1_PID P_PORT=$N1_PORT P_PEER_PID=$N2_PID P_PEER_PORT=$N2_PORT
        log "$P_NAME pid $P_PID port $P_PORT, its peer pid $P_PEER_PID port $P_PEER_PORT"
    fi

    for mix in get90 set; do
        ratio=0.9
        [ "$mix" = set ] && ratio=0
        for vsize in 100 4096; do
            for pipe in 1 16; do
                scen="$mix-${vsize}B-p$pipe"
                if [ -n "$ONLY" ] && ! [[ $scen =~ $ONLY ]]; then continue; fi
                common=(--conns "$CONNS" --threads "$CLIENT_THREADS" --pipeline "$pipe"
                    --keys "$KEYS" --key-size "$KEY_SIZE" --value-size "$vsize")
                # Every key holds a value of this scenario's size before anything is timed.
                for side in "${SIDES[@]}"; do
                    eval "port=\$${side}_PORT"
                    mcload "$port" "${common[@]}" --preload --ops 0 --timeout 120 >/dev/null \
                        || die "$scen: preload of $side failed"
                done
                for rep in $(seq 1 "$REPEATS"); do
                    for side in "${SIDES[@]}"; do
                        eval "port=\$${side}_PORT pid=\$${side}_PID name=\$${side}_NAME"
                        peer_pid=""
                        [ "$side" = P ] && peer_pid=$P_PEER_PID
                        t0=$(cpu_ticks "$pid")
                        p0=0
                        [ -n "$peer_pid" ] && p0=$(cpu_ticks "$peer_pid")
                        b0=$(busy_ticks)
                        w0=$EPOCHREALTIME
                        rc=0
                        line=$(mcload "$port" "${common[@]}" --get-ratio "$ratio" \
                            --duration "$DURATION" --warmup "$WARMUP" \
                            --seed "$rep" --timeout $((${DURATION%.*} + 60))) || rc=$?
                        w1=$EPOCHREALTIME
                        b1=$(busy_ticks)
                        t1=$(cpu_ticks "$pid")
                        p1=0
                        [ -n "$peer_pid" ] && p1=$(cpu_ticks "$peer_pid")
                        [ -n "$line" ] || die "$scen: mcload against $name failed (exit $rc)"
                        [ "$rc" = 0 ] || log "WARNING $scen $name rep $rep: errors in run: $line"
                        # server_us_per_op: server CPU over the whole invocation (warm-up
                        # included) divided by every reply the client got in it.
                        # server_cpu_util: the same CPU over the wall time, in cores.
                        # peer_*: the same for the pair node's peer (0 without one).
                        # other_cpu_util: machine-wide busy CPU not spent by these servers or
                        # this mcload, in cores: anything above ~0.05 means a noisy run.
                        derived=$(awk -v d=$((t1 - t0)) -v pd=$((p1 - p0)) -v busy=$((b1 - b0)) \
                            -v hz="$CLK_TCK" -v n="$(kv "$line" all_ops)" \
                            -v cli="$(kv "$line" client_total_cpu_s)" \
                            -v w0="$w0" -v w1="$w1" 'BEGIN {
                                wall = w1 - w0; if (wall <= 0) wall = 1e-9
                                per = (n > 0) ? (d / hz / n * 1e6) : 0
                                pper = (n > 0) ? (pd / hz / n * 1e6) : 0
                                other = (busy - d - pd) / hz - cli; if (other < 0) other = 0
                                printf("server_us_per_op=%.3f server_cpu_util=%.3f peer_us_per_op=%.3f peer_cpu_util=%.3f other_cpu_util=%.3f wall_s=%.3f",
                                    per, d / hz / wall, pper, pd / hz / wall, other / wall, wall)
                            }')
                        echo "scenario=$scen server=$side name=$name rep=$rep rc=$rc $line $derived" >>"$RAW"
                        printf '# %-16s %-16s rep %s: %8s ops/s  p99 %9s us  client util %s  %s\n' \
                            "$scen" "$name" "$rep" "$(kv "$line" ops_per_sec)" "$(kv "$line" p99_us)" \
                            "$(kv "$line" client_cpu_util)" "$derived" >&2
                    done
                done
            done
        done
    done
    stop_pid "$A_PID"
    if want 1; then stop_pid "$B_PID"; fi
    if want 2; then
        stop_pid "$P_PEER_PID"
        stop_pid "$P_PID"
    fi

    # throughput_table SIDE TITLE TARGET: SIDE's rows against A. TARGET (a minimum ops/s
    # ratio) adds a column saying whether each row meets it.
    throughput_table() {
        local x=$1 title=$2 target=${3:-}
        eval "local xn=\$${x}_NAME"
        echo
        echo "$title: median [min-max] over $REPEATS runs; X/A = $xn / $A_NAME"
        awk -v an="$A_NAME" -v xn="$xn" -v x="$x" -v target="$target" '
        function med(arr, n,   i, j, t, a) {
            for (i = 1; i <= n; i++) a[i] = arr[i]
            for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
            lo = a[1]; hi = a[n]
            return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
        }
        function get(key,   i, kv) {
            for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == key) return kv[2] }
            return ""
        }
        $1 ~ /^scenario=/ {
            side = get("server")
            if (side != "A" && side != x) next
            s = get("scenario")
            if (!(s in seen)) { seen[s] = 1; order[++ns] = s }
            k = s SUBSEP side
            n[k]++
            ops[k, n[k]] = get("ops_per_sec"); p99[k, n[k]] = get("p99_us")
            srv[k, n[k]] = get("server_us_per_op"); cli[k, n[k]] = get("client_cpu_util")
            sutil[k, n[k]] = get("server_cpu_util"); oth[k, n[k]] = get("other_cpu_util")
            peer[k, n[k]] = get("peer_us_per_op")
            if (get("rc") != 0) bad[k]++
        }
        function stat(tbl, k,   i, v) {
            for (i = 1; i <= n[k]; i++) v[i] = tbl[k, i]
            m = med(v, n[k]); return m
        }
        END {
            printf "%-16s | %-26s | %-26s | %5s | %9s %9s %5s | %8s %8s %5s",
                "scenario", an " ops/s", xn " ops/s", "X/A", "p99us A", "p99us X", "X/A",
                "srvus/op A", "X", "X/A"
            if (x == "P") printf " | %7s", "peer/op"
            printf " | %9s %9s %5s", "srv util A/X", "cli util A/X", "other"
            if (target != "") printf " | target X/A >= %s", target
            printf "\n"
            for (i = 1; i <= ns; i++) {
                s = order[i]; ka = s SUBSEP "A"; kb = s SUBSEP x
                if (!n[ka] || !n[kb]) continue
                oa = stat(ops, ka); la = lo; ha = hi
                ob = stat(ops, kb); lb = lo; hb = hi
                pa = stat(p99, ka); pb = stat(p99, kb)
                ca = stat(srv, ka); cb = stat(srv, kb)
                ua = stat(sutil, ka); ub = stat(sutil, kb)
                xa = stat(cli, ka); xb = stat(cli, kb)
                pp = stat(peer, kb)
                # The worst run, not the median: one disturbed run is worth knowing about.
                om = 0; for (j = 1; j <= n[ka]; j++) if (oth[ka, j] > om) om = oth[ka, j]
                for (j = 1; j <= n[kb]; j++) if (oth[kb, j] > om) om = oth[kb, j]
                flag = (bad[ka] || bad[kb]) ? "  (errors: see raw)" : ""
                r = (oa > 0 ? ob / oa : 0)
                printf "%-16s | %8d [%7d-%7d] | %8d [%7d-%7d] | %5.2f | %9.0f %9.0f %5.2f | %10.2f %8.2f %5.2f",
                    s, oa, la, ha, ob, lb, hb, r, pa, pb, (pa > 0 ? pb / pa : 0),
                    ca, cb, (ca > 0 ? cb / ca : 0)
                if (x == "P") printf " | %7.2f", pp
                printf " | %4.2f/%4.2f %4.2f/%4.2f %5.2f", ua, ub, xa, xb, om
                if (target != "") printf " | %s", (r >= target ? "met" : "NOT met")
                printf "%s\n", flag
                if (om > worst) worst = om
            }
            if (worst > 0.10)
                printf "WARNING: other processes used up to %.2f CPUs during some runs (column other): those figures measure the neighbours too; rerun on a quiet machine.\n", worst
        }' "$RAW"
    }
    {
        # if, not &&: a false test as the group's last command would fail the pipeline (set -e).
        if want 1; then throughput_table B "Scenario 1, throughput without a peer"; fi
        if want 2; then throughput_table P "Scenario 2, throughput of a pair node with its peer running (peer/op: the peer's CPU us per op)" 0.9; fi
    } | tee -a "$OUT/summary.txt"
fi

if want 3; then
    echo
    echo "Scenario 3, memory: $MEM_ITEMS items, ${KEY_SIZE} B keys, 100 B values, -m 1024, fresh server each"
    # No pipe around the loop: a subshell would hide the started PIDs from the trap.
    memrow() { printf '%-16s | %12s | %12s | %12s | %14s | %s\n' "$@" | tee -a "$OUT/memory.txt"; }
    memrow "server" "RSS empty kB" "RSS full kB" "items" "bytes/item" "load"
    for side in A B; do
        eval "name=\$${side}_NAME"
        if [ "$side" = A ]; then argv=("${A_ARGV[@]}"); else argv=("${B_ARGV[@]}"); fi
        start_server "$name-mem" 1024 "${argv[@]}"
        rss0=$(rss_kb "$SRV_PID")
        rc=0
        line=$(mcload "$SRV_PORT" --conns "$CONNS" --threads "$CLIENT_THREADS" --pipeline 16 \
            --keys "$MEM_ITEMS" --key-size 32 --value-size 100 --preload --ops 0 --timeout 500) || rc=$?
        [ -n "$line" ] || die "memory load of $name failed (exit $rc)"
        # memcached grows its hash table in a background thread; measure after it is done.
        st=$(stats_of "$SRV_PORT")
        for i in $(seq 1 100); do
            [ "$(stat_field "$st" hash_is_expanding)" = 1 ] || break
            sleep 0.1
            st=$(stats_of "$SRV_PORT")
        done
        items=$(stat_field "$st" curr_items)
        rss1=$(rss_kb "$SRV_PID")
        n=${items:-$MEM_ITEMS}
        per=$(awk -v a="$rss0" -v b="$rss1" -v n="$n" 'BEGIN {printf("%.1f", (n > 0) ? (b - a) * 1024 / n : 0)}')
        load="ok"
        [ "$rc" = 0 ] || load="ERRORS (setup_errors=$(kv "$line" setup_errors))"
        memrow "$name" "$rss0" "$rss1" "${items:-n/a (no stats)}" "$per" "$load"
        echo "memory server=$side name=$name rss0_kb=$rss0 rss1_kb=$rss1 items=${items:-} bytes_per_item=$per rc=$rc $line" >>"$RAW"
        stop_pid "$SRV_PID"
    done
fi

# ---- scenario 4: bootstrap ---------------------------------------------------------------
# For each item count: node A (a pair node whose peer is not up, so it serves alone) is
# loaded; then node B starts with A as its peer and copies A's data before it opens its
# client port. Trial 1 times the copy with nothing else running; trial 2 runs a get-only
# mcload against A during the copy, in a window as long as trial 1's copy, and compares
# its throughput with a window of the same length just before.
if want 4; then
    echo
    echo "Scenario 4, bootstrap: $PAIR_NAME node B starts with node A as its peer; ${KEY_SIZE} B keys, 100 B values; ready = B's client port accepts and B's curr_items = A's; B on CPUs ${BOOT_B_CPUS:-$SERVER_CPUS}"
    bootrow() { printf '%-9s | %-21s | %-21s | %-13s | %9s | %9s | %6s | %s\n' "$@" | tee -a "$OUT/bootstrap.txt"; }
    echo "medians over $REPEATS repeats; get load: $CONNS conns, pipeline $BOOT_PIPELINE; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    bootrow "items" "ready idle s (port)" "ready loaded s (port)" "target" "A get/s before" "during" "ratio" "target during/before >= 0.8 (window s)"
    for items in $BOOT_ITEMS; do
        ra=$(free_port)
        rb=$(free_port)
        while [ "$rb" = "$ra" ]; do rb=$(free_port); done
        read -ra extra <<<"$(pair_flags "$ra" "$rb")"
        start_server "boot-$items-A" 1024 "${PAIR_ARGV[@]}" "${extra[@]}"
        BA_PID=$SRV_PID BA_PORT=$SRV_PORT
        line=$(mcload "$BA_PORT" --conns "$CONNS" --pipeline 16 --keys "$items" --key-size "$KEY_SIZE" \
            --value-size 100 --preload --ops 0 --timeout 500) || die "bootstrap: loading $items items into A failed"
        a_items=$(stat_field "$(stats_of "$BA_PORT")" curr_items)
        [ -n "$a_items" ] || die "bootstrap: no curr_items from A"
        read -ra extra <<<"$(pair_flags "$rb" "$ra")"
        get_load=(--conns "$CONNS" --threads "$CLIENT_THREADS" --pipeline "$BOOT_PIPELINE"
            --keys "$items" --key-size "$KEY_SIZE" --value-size 100 --get-ratio 1)

        # boot_b TRIAL: starts B, waits (bounded) until it is ready, leaves BB_PID set and
        # the mcprobe line in READY.
        boot_b() {
            local bport t0 rc=0
            bport=$(free_port)
            t0=$EPOCHREALTIME
            BG_CPUS=$BOOT_B_CPUS start_bg "boot-$items-B$1" "$bport" 1024 "${PAIR_ARGV[@]}" "${extra[@]}"
            BB_PID=$BG_PID
            if [ "$1" = loaded ]; then
                mcload "$BA_PORT" "${get_load[@]}" --duration "$window" --seed 2 \
                    --timeout $((BOOT_TIMEOUT + 30)) >"$OUT/boot-during.txt" &
                LOAD_PID=$!
            fi
            READY=$(timeout $((BOOT_TIMEOUT + 10)) "${CLIENT_PIN[@]}" "$MCPROBE" ready --port "$bport" \
                --items "$a_items" --since "$t0" --timeout "$BOOT_TIMEOUT" --output kv) || rc=$?
            [ -n "$READY" ] || die "bootstrap: mcprobe ready failed (exit $rc)"
            echo "bootstrap items=$items trial=$1 a_items=$a_items rc=$rc $READY $(stat_field "$(stats_of "$bport")" repl_last_bootstrap_ms | sed 's/^/b_last_bootstrap_ms=/')" >>"$RAW"
        }

        # Each repeat: an undisturbed copy, a get window on A alone, then a copy under
        # the same get load. The row shows medians over the repeats.
        idles=() ports=() loadeds=() lports=() befores=() durings=() ratios=()
        for rep in $(seq 1 "$REPEATS"); do
            boot_b idle
            idle_s=$(kv "$READY" items_ready_s)
            idles+=("$idle_s")
            ports+=("$(kv "$READY" port_open_s)")
            stop_pid "$BB_PID"
            # The comparison window lasts as long as an undisturbed copy (at least 0.2 s).
            window=$(awk -v t="$idle_s" 'BEGIN { if (t == "none" || t + 0 < 0.2) t = 0.2; printf "%.2f", t }')
            [ "$idle_s" = none ] && window=1
            before=$(mcload "$BA_PORT" "${get_load[@]}" --duration "$window" --seed 1 --timeout 60) \
                || die "bootstrap: get load before the copy failed"
            boot_b loaded
            wait "$LOAD_PID" || log "WARNING bootstrap $items: the get load during the copy had errors"
            stop_pid "$BB_PID"
            during=$(<"$OUT/boot-during.txt")
            loadeds+=("$(kv "$READY" items_ready_s)")
            lports+=("$(kv "$READY" port_open_s)")
            echo "bootstrap-load items=$items rep=$rep phase=before window=$window $before" >>"$RAW"
            echo "bootstrap-load items=$items rep=$rep phase=during window=$window $during" >>"$RAW"
            befores+=("$(kv "$before" ops_per_sec)")
            durings+=("$(kv "$during" ops_per_sec)")
            ratios+=("$(awk -v a="$(kv "$before" ops_per_sec)" -v b="$(kv "$during" ops_per_sec)" \
                'BEGIN { printf "%.3f", (a > 0) ? b / a : 0 }')")
            log "bootstrap $items rep $rep: ready idle ${idle_s}s loaded $(kv "$READY" items_ready_s)s; A get/s before $(kv "$before" ops_per_sec) during $(kv "$during" ops_per_sec) (window ${window}s)"
        done
        idle_s=$(median "${idles[@]}")
        loaded_s=$(median "${loadeds[@]}")
        ob=$(median "${befores[@]}")
        od=$(median "${durings[@]}")
        ratio=$(median "${ratios[@]}")
        verdict_ready="-"
        if [ "$items" -ge 1000000 ]; then
            verdict_ready=$(awk -v t="$idle_s" 'BEGIN { print (t != "none" && t <= 0.5) ? "<=0.5 met" : "<=0.5 NOT met" }')
        fi
        note=$(awk -v r="$ratio" 'BEGIN { print (r >= 0.8) ? "met" : "NOT met" }')
        # A loaded copy that ended before the window did dilutes "during" with idle time.
        awk -v l="$loaded_s" -v w="$window" 'BEGIN { exit !(l != "none" && l < w) }' \
            && note="$note (copy ended inside the window)"
        bootrow "$items" "$idle_s ($(median "${ports[@]}"))" "$loaded_s ($(median "${lports[@]}"))" \
            "$verdict_ready" "$ob" "$od" "$(printf '%.2f' "$ratio")" "$note ($window)"
        stop_pid "$BA_PID"
    done
fi

# ---- scenario 5: replication lag -------------------------------------------------------
# A pair; mcload drives node 1 at its peak (closed loop) while mcprobe sets fresh keys on
# node 1 and busy-polls node 2 until each is visible.
if want 5; then
    start_pair "$PAIR_NAME-lag" "$SERVER_MEM"
    echo
    echo "Scenario 5, replication lag: mcload on node 1 ($CONNS conns, pipeline $LAG_PIPELINE, 100 B values, $KEYS keys), probes set on node 1 and poll node 2; lag = node 1's STORED -> value visible on node 2"
    lagrow() { printf '%-6s | %10s | %6s | %5s | %9s %9s %9s %9s | %9s | %s\n' "$@" | tee -a "$OUT/lag.txt"; }
    echo "probes: fresh key each, ${LAG_GAP_MS} ms apart, at most $LAG_PROBES in ${LAG_DURATION} s; load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
    lagrow "load" "load ops/s" "probes" "lost" "p50 us" "p99 us" "p99.9 us" "max us" "send p99" "target p99"
    mcload "$N1_PORT" --conns "$CONNS" --pipeline 16 --keys "$KEYS" --key-size "$KEY_SIZE" \
        --value-size 100 --preload --ops 0 --timeout 120 >/dev/null || die "lag: preload failed"
    for mix in get90 set; do
        ratio=0.9 target=1000
        [ "$mix" = set ] && ratio=0 target=2000
        # mcload warms up first and outlasts the probing, so every probe sees full load.
        mcload "$N1_PORT" --conns "$CONNS" --threads "$CLIENT_THREADS" --pipeline "$LAG_PIPELINE" \
            --keys "$KEYS" --key-size "$KEY_SIZE" --value-size 100 --get-ratio "$ratio" \
            --warmup 0.5 --duration "$(awk -v d="$LAG_DURATION" 'BEGIN { print d + 0.5 }')" \
            --seed 5 --timeout $((${LAG_DURATION%.*} + 60)) >"$OUT/lag-load-$mix.txt" &
        LOAD_PID=$!
        sleep 0.5
        rc=0
        probe=$(timeout $((${LAG_DURATION%.*} + 30)) "${CLIENT_PIN[@]}" "$MCPROBE" lag \
            --set-port "$N1_PORT" --get-port "$N2_PORT" --duration "$LAG_DURATION" \
            --probes "$LAG_PROBES" --gap-ms "$LAG_GAP_MS" --timeout $((${LAG_DURATION%.*} + 20)) \
            --output kv) || rc=$?
        wait "$LOAD_PID" || log "WARNING lag $mix: the load had errors"
        load=$(<"$OUT/lag-load-$mix.txt")
        [ -n "$probe" ] || die "lag: mcprobe failed (exit $rc)"
        echo "lag mix=$mix rc=$rc $probe load: $load" >>"$RAW"
        p99=$(kv "$probe" lag_p99_us)
        verdict=$(awk -v p="$p99" -v t="$target" 'BEGIN { print (p <= t) ? "<=" t " met" : "<=" t " NOT met" }')
        lagrow "$mix" "$(kv "$load" ops_per_sec)" "$(kv "$probe" probes)" "$(kv "$probe" lost)" \
            "$(kv "$probe" lag_p50_us)" "$p99" "$(kv "$probe" lag_p999_us)" "$(kv "$probe" lag_max_us)" \
            "$(kv "$probe" send_p99_us)" "$verdict"
    done
    st=$(stats_of "$N1_PORT")
    echo "node 1 after the runs: repl_link_state $(stat_field "$st" repl_link_state), repl_pending_keys $(stat_field "$st" repl_pending_keys), repl_resyncs_full $(stat_field "$st" repl_resyncs_full), repl_reconnects $(stat_field "$st" repl_reconnects)" | tee -a "$OUT/lag.txt"
    stop_pid "$N2_PID"
    stop_pid "$N1_PID"
fi
