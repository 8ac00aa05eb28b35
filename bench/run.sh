#!/usr/bin/env bash
# bench/run.sh: the side-by-side benchmark harness. Starts two memcached-compatible
# servers (default: memcached as A, repcached as B) with the same flags, drives them
# with mcload in alternating runs, and prints medians, ranges and B/A ratios for
# throughput, tail latency, server CPU per operation and memory per item.
#
# Usage: bench/run.sh [options]     (bench/run.sh --help lists them)
# Every server it starts listens on 127.0.0.1 only and is stopped by its PID; a trap
# stops them on any exit. Every load run is bounded by mcload --timeout and by timeout(1).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
MCLOAD="$ROOT/bench/loadgen/target/release/mcload"

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
SKIP_PERF=0
SKIP_MEMORY=0
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
  --only REGEX       run only throughput scenarios whose name matches
  --skip-perf        memory scenario only
  --skip-memory      throughput scenarios only
  --server-cpus L    taskset CPU list for servers   (default: first half of the CPUs)
  --client-cpus L    taskset CPU list for mcload    (default: second half)
  --out DIR          where raw results and server logs go (default: a new /tmp dir)
  --quick            1 repeat, 2 s runs, 0.5 s warm-up: a smoke test of the harness
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
        --skip-perf) SKIP_PERF=1; shift ;;
        --skip-memory) SKIP_MEMORY=1; shift ;;
        --server-cpus) SERVER_CPUS=$2; shift 2 ;;
        --client-cpus) CLIENT_CPUS=$2; shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --quick) REPEATS=1; DURATION=2; WARMUP=0.5; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "run.sh: unknown option $1" >&2; usage >&2; exit 64 ;;
    esac
done

die() { echo "run.sh: $*" >&2; exit 1; }
log() { echo "# $*" >&2; }

[ "$A_NAME" != "$B_NAME" ] || die "--a-name and --b-name must differ"
read -ra A_ARGV <<<"$A_CMD"
read -ra B_ARGV <<<"$B_CMD"
for bin in "${A_ARGV[0]}" "${B_ARGV[0]}"; do
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

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# start_server NAME MEM ARGV... : sets SRV_PID and SRV_PORT.
start_server() {
    local name=$1 mem=$2 try port pid i
    shift 2
    for try in $(seq 1 20); do
        port=$((20000 + RANDOM % 40000))
        port_open "$port" && continue
        "${SERVER_PIN[@]}" "$@" -p "$port" -l 127.0.0.1 -t "$SERVER_THREADS" -m "$mem" \
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

cpu_ticks() {
    local stat rest f
    stat=$(<"/proc/$1/stat")
    rest=${stat##*) }
    read -ra f <<<"$rest"
    # Fields 14 and 15 (utime, stime) counted from field 3, the first after the name.
    echo $((f[11] + f[12]))
}

# Busy ticks of all CPUs together, from /proc/stat (user nice system irq softirq steal).
busy_ticks() {
    local cpu user nice system idle iowait irq softirq steal rest
    read -r cpu user nice system idle iowait irq softirq steal rest </proc/stat
    echo $((user + nice + system + irq + softirq + steal))
}

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

stats_of() {
    timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"; printf "stats\r\nquit\r\n" >&3; cat <&3' \
        _ "$1" 2>/dev/null | tr -d '\r' || true
}

stat_field() { awk -v k="$2" '$1 == "STAT" && $2 == k {print $3}' <<<"$1"; }

# ---- load -----------------------------------------------------------------------------

# mcload PORT ARGS... : prints the kv line; exit 2 means the run had errors.
mcload() {
    local port=$1
    shift
    timeout 600 "${CLIENT_PIN[@]}" "$MCLOAD" --port "$port" --output kv "$@"
}

kv() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k {print $2}'; }

# ---- the run ---------------------------------------------------------------------------

log "building mcload"
cargo build --release --quiet --manifest-path "$ROOT/bench/loadgen/Cargo.toml"

{
    echo "machine: $NPROC CPUs, $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo), kernel $(uname -r)"
    echo "A: $A_NAME = $A_CMD ($("${A_ARGV[@]}" -V 2>/dev/null | head -1 || true))"
    echo "B: $B_NAME = $B_CMD ($("${B_ARGV[@]}" -V 2>/dev/null | head -1 || true))"
    echo "server flags: -t $SERVER_THREADS -m $SERVER_MEM -c $SERVER_MAXCONN ${USER_FLAG[*]} on 127.0.0.1; server CPUs $SERVER_CPUS, client CPUs $CLIENT_CPUS"
    echo "load: $CONNS conns, $CLIENT_THREADS client thread(s), $KEYS keys of $KEY_SIZE B, ${DURATION}s runs after ${WARMUP}s warm-up, $REPEATS repeats, alternating A/B"
    echo "raw results and server logs: $OUT"
} | tee "$OUT/header.txt"

if [ "$SKIP_PERF" = 0 ]; then
    start_server "$A_NAME" "$SERVER_MEM" "${A_ARGV[@]}"
    A_PID=$SRV_PID A_PORT=$SRV_PORT
    start_server "$B_NAME" "$SERVER_MEM" "${B_ARGV[@]}"
    B_PID=$SRV_PID B_PORT=$SRV_PORT
    log "$A_NAME pid $A_PID port $A_PORT; $B_NAME pid $B_PID port $B_PORT"

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
                for side in A B; do
                    eval "port=\$${side}_PORT"
                    mcload "$port" "${common[@]}" --preload --ops 0 --timeout 120 >/dev/null \
                        || die "$scen: preload of $side failed"
                done
                for rep in $(seq 1 "$REPEATS"); do
                    for side in A B; do
                        eval "port=\$${side}_PORT pid=\$${side}_PID name=\$${side}_NAME"
                        t0=$(cpu_ticks "$pid")
                        b0=$(busy_ticks)
                        w0=$EPOCHREALTIME
                        rc=0
                        line=$(mcload "$port" "${common[@]}" --get-ratio "$ratio" \
                            --duration "$DURATION" --warmup "$WARMUP" \
                            --seed "$rep" --timeout $((${DURATION%.*} + 60))) || rc=$?
                        w1=$EPOCHREALTIME
                        b1=$(busy_ticks)
                        t1=$(cpu_ticks "$pid")
                        [ -n "$line" ] || die "$scen: mcload against $name failed (exit $rc)"
                        [ "$rc" = 0 ] || log "WARNING $scen $name rep $rep: errors in run: $line"
                        # server_us_per_op: server CPU over the whole invocation (warm-up
                        # included) divided by every reply the client got in it.
                        # server_cpu_util: the same CPU over the wall time, in cores.
                        # other_cpu_util: machine-wide busy CPU not spent by this server or
                        # this mcload, in cores: anything above ~0.05 means a noisy run.
                        derived=$(awk -v d=$((t1 - t0)) -v busy=$((b1 - b0)) -v hz="$CLK_TCK" \
                            -v n="$(kv "$line" all_ops)" -v cli="$(kv "$line" client_total_cpu_s)" \
                            -v w0="$w0" -v w1="$w1" 'BEGIN {
                                wall = w1 - w0; if (wall <= 0) wall = 1e-9
                                per = (n > 0) ? (d / hz / n * 1e6) : 0
                                other = (busy - d) / hz - cli; if (other < 0) other = 0
                                printf("server_us_per_op=%.3f server_cpu_util=%.3f other_cpu_util=%.3f wall_s=%.3f",
                                    per, d / hz / wall, other / wall, wall)
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
    stop_pid "$B_PID"

    echo
    echo "Throughput scenarios: median [min-max] over $REPEATS runs; B/A = $B_NAME / $A_NAME"
    awk -v an="$A_NAME" -v bn="$B_NAME" '
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
    {
        s = get("scenario"); side = get("server")
        if (!(s in seen)) { seen[s] = 1; order[++ns] = s }
        k = s SUBSEP side
        n[k]++
        ops[k, n[k]] = get("ops_per_sec"); p99[k, n[k]] = get("p99_us")
        srv[k, n[k]] = get("server_us_per_op"); cli[k, n[k]] = get("client_cpu_util")
        sutil[k, n[k]] = get("server_cpu_util"); oth[k, n[k]] = get("other_cpu_util")
        if (get("rc") != 0) bad[k]++
    }
    function stat(tbl, k,   i, v) {
        for (i = 1; i <= n[k]; i++) v[i] = tbl[k, i]
        m = med(v, n[k]); return m
    }
    END {
        printf "%-16s | %-26s | %-26s | %5s | %9s %9s %5s | %8s %8s %5s | %9s %9s %5s\n",
            "scenario", an " ops/s", bn " ops/s", "B/A", "p99us A", "p99us B", "B/A",
            "srvus/op A", "B", "B/A", "srv util A/B", "cli util A/B", "other"
        for (i = 1; i <= ns; i++) {
            s = order[i]; ka = s SUBSEP "A"; kb = s SUBSEP "B"
            oa = stat(ops, ka); la = lo; ha = hi
            ob = stat(ops, kb); lb = lo; hb = hi
            pa = stat(p99, ka); pb = stat(p99, kb)
            ca = stat(srv, ka); cb = stat(srv, kb)
            ua = stat(sutil, ka); ub = stat(sutil, kb)
            xa = stat(cli, ka); xb = stat(cli, kb)
            # The worst run, not the median: one disturbed run is worth knowing about.
            om = 0; for (j = 1; j <= n[ka]; j++) if (oth[ka, j] > om) om = oth[ka, j]
            for (j = 1; j <= n[kb]; j++) if (oth[kb, j] > om) om = oth[kb, j]
            flag = (bad[ka] || bad[kb]) ? "  (errors: see raw)" : ""
            printf "%-16s | %8d [%7d-%7d] | %8d [%7d-%7d] | %5.2f | %9.0f %9.0f %5.2f | %10.2f %8.2f %5.2f | %4.2f/%4.2f %4.2f/%4.2f %5.2f%s\n",
                s, oa, la, ha, ob, lb, hb, (oa > 0 ? ob / oa : 0), pa, pb, (pa > 0 ? pb / pa : 0),
                ca, cb, (ca > 0 ? cb / ca : 0), ua, ub, xa, xb, om, flag
            if (om > worst) worst = om
        }
        if (worst > 0.10)
            printf "WARNING: other processes used up to %.2f CPUs during some runs (column other): those figures measure the neighbours too; rerun on a quiet machine.\n", worst
    }' "$RAW" | tee "$OUT/summary.txt"
fi

if [ "$SKIP_MEMORY" = 0 ]; then
    echo
    echo "Memory: $MEM_ITEMS items, ${KEY_SIZE} B keys, 100 B values, -m 1024, fresh server each"
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
