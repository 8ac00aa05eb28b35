#!/usr/bin/env bash
# Installs the repcached .deb on this machine, checks what it installed, and removes it
# again: the binary runs, the manual page renders without warnings, the units pass
# systemd-analyze verify, the unit's command line starts a node as the repcached user, and
# remove/purge take everything back. Needs root; run by `make package-check`.
#
# usage: packaging/check-package.sh PATH/TO/repcached_VERSION_ARCH.deb
set -euo pipefail

deb=$1
name=repcached
unitdir=/lib/systemd/system
[ "$(id -u)" = 0 ] || { echo "package-check: must run as root (it installs the package)" >&2; exit 1; }
[ -f "$deb" ] || { echo "package-check: no package at $deb" >&2; exit 1; }
if dpkg-query -W -f='${Status}' "$name" 2>/dev/null | grep -q ' installed$'; then
    echo "package-check: $name is already installed here; this check would remove it" >&2
    exit 1
fi
version=$(dpkg-deb -f "$deb" Version)

user_existed=no
getent passwd "$name" >/dev/null && user_existed=yes
work=$(mktemp -d)
node_pid=
cleanup() {
    local rc=$?
    [ -n "$node_pid" ] && kill "$node_pid" 2>/dev/null || true
    if dpkg-query -W -f='${Status}' "$name" 2>/dev/null | grep -q 'installed\|config-files'; then
        dpkg --purge "$name" >/dev/null 2>&1 || true
    fi
    if [ "$user_existed" = no ] && getent passwd "$name" >/dev/null; then
        deluser --system --quiet "$name" >/dev/null 2>&1 || userdel "$name" || true
        getent group "$name" >/dev/null && { delgroup --system --quiet "$name" >/dev/null 2>&1 || groupdel "$name" || true; }
    fi
    rm -rf "$work"
    exit "$rc"
}
trap cleanup EXIT

step() { echo "package-check: $*"; }
fail() { echo "package-check: FAILED: $*" >&2; exit 1; }

step "dpkg -i $deb"
DEBIAN_FRONTEND=noninteractive dpkg -i "$deb"

step "repcached -V"
got=$(/usr/bin/repcached -V)
echo "$got"
[ "$got" = "$name $version" ] || fail "repcached -V printed '$got', expected '$name $version'"

step "the service user"
getent passwd "$name" || fail "postinst did not create the user $name"
[ -f /etc/default/$name ] || fail "/etc/default/$name was not installed"

step "man -l /usr/share/man/man1/$name.1.gz"
MANPAGER=cat MANWIDTH=80 man -l /usr/share/man/man1/$name.1.gz > "$work/man.txt"
head -n 12 "$work/man.txt"
grep -q '^EXIT STATUS' "$work/man.txt" || fail "the rendered manual page has no EXIT STATUS section"
MANPAGER=cat man --warnings -l /usr/share/man/man1/$name.1.gz 2> "$work/man.warn" > /dev/null
if [ -s "$work/man.warn" ]; then cat "$work/man.warn" >&2; fail "groff warnings in the manual page"; fi

step "systemd-analyze verify"
# Works without a running systemd (a CI container has none): it loads the files, checks
# every directive and runs `man repcached(1)` for Documentation=. Any message is a failure.
systemd-analyze verify "$unitdir/$name.service" "$unitdir/$name@.service" > "$work/verify.txt" 2>&1 ||
    { cat "$work/verify.txt" >&2; fail "systemd-analyze verify"; }
if [ -s "$work/verify.txt" ]; then cat "$work/verify.txt" >&2; fail "systemd-analyze verify complained"; fi

step "the unit's command line, as the $name user"
# What systemd would run: ExecStart with its "$$" escapes undone, the defaults file as the
# environment, the unit's user and open-file limit. Only the port is changed, to a free one.
exec_start=$(sed -n 's/^ExecStart=//p' "$unitdir/$name.service" | sed 's/\$\$/$/g')
limit=$(sed -n 's/^LimitNOFILE=//p' "$unitdir/$name.service")
# Raising a hard limit needs CAP_SYS_RESOURCE, which systemd has and a container's root
# may lack: then the check runs with the lower hard limit it has.
hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt "$limit" ]; then limit=$hard; fi
script=$(printf '%s' "$exec_start" | sed -n "s/^\/bin\/sh -c '\(.*\)'\$/\1/p")
[ -n "$script" ] || fail "ExecStart is not the expected /bin/sh -c '...' line"
for port in $(seq 21211 21260); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && continue
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin bash -c '
        set -a; . "$1"; set +a; PORT=$2
        exec prlimit --nofile="$3:$3" setpriv --reuid="$4" --regid="$4" --init-groups /bin/sh -c "$5"
    ' check /etc/default/$name "$port" "$limit" "$name" "$script" 2> "$work/node.log" &
    node_pid=$!
    ready=no
    for _ in $(seq 100); do
        if { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null; then
            printf 'version\r\n' >&3
            read -r -t 2 reply <&3 || reply=
            exec 3<&- 3>&-
            case $reply in VERSION*) ready=yes; break ;; esac
        fi
        kill -0 "$node_pid" 2>/dev/null || break
        sleep 0.1
    done
    [ "$ready" = yes ] && break
    wait "$node_pid" || true
    node_pid=
    grep -q 'Address already in use' "$work/node.log" || { cat "$work/node.log" >&2; fail "the node did not start"; }
done
[ -n "$node_pid" ] || fail "no free port for the node"
echo "node answered: ${reply%$'\r'} on 127.0.0.1:$port"
uid=$(sed -n 's/^Uid:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$node_pid/status")
[ "$uid" = "$(id -u "$name")" ] || fail "the node runs as uid $uid, not as $name"
kill -TERM "$node_pid"
rc=0; wait "$node_pid" || rc=$?
node_pid=
[ "$rc" = 0 ] || { cat "$work/node.log" >&2; fail "SIGTERM: exit status $rc, expected 0"; }

step "dpkg -r $name"
dpkg -r "$name"
[ ! -e /usr/bin/$name ] || fail "/usr/bin/$name is still there after dpkg -r"
[ ! -e "$unitdir/$name.service" ] || fail "the unit is still there after dpkg -r"
[ -f /etc/default/$name ] || fail "dpkg -r removed the configuration (only purge may)"

step "dpkg --purge $name"
dpkg --purge "$name"
[ ! -e /etc/default/$name ] || fail "/etc/default/$name is still there after purge"
if dpkg-query -W "$name" >/dev/null 2>&1 && dpkg-query -W -f='${Status}' "$name" | grep -qv 'not-installed'; then
    fail "dpkg still knows $name after purge"
fi
step "ok"
