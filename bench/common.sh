# bench/common.sh: helpers shared by the benchmark scripts (sourced, not run). Callers
# define die MESSAGE, which must not return.

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# A port nothing listens on now (the server may still lose a race for it; callers check).
# Below the kernel's ephemeral range (32768-60999 by default): a port from that range can
# be taken between the check and the bind by any outgoing connection, such as one node
# dialling its peer.
free_port() {
    local port try
    for try in $(seq 1 50); do
        port=$((20000 + RANDOM % 12000))
        port_open "$port" || { echo "$port"; return 0; }
    done
    die "no free port found"
}

cpu_ticks() {
    local stat rest f
    stat=$(<"/proc/$1/stat")
    rest=${stat##*) }
    read -ra f <<<"$rest"
    # Fields 14 and 15 (utime, stime) counted from field 3, the first after the name.
    echo $((f[11] + f[12]))
}

stats_of() {
    timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"; printf "stats\r\nquit\r\n" >&3; cat <&3' \
        _ "$1" 2>/dev/null | tr -d '\r' || true
}

stat_field() { awk -v k="$2" '$1 == "STAT" && $2 == k {print $3}' <<<"$1"; }
