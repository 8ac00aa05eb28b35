#!/usr/bin/env bash
#! Installs the real clients `make interop` drives (Debian packages, pymemcache) when missing.
#! Fails, never skips: a client that cannot be installed is a failed interop run.
set -euo pipefail

# The suite runs under Debian's python3, where python3-pymemcache lands.
PY=/usr/bin/python3
# package -> what proves it is installed
declare -A probe=(
  [php-cli]="command -v php"
  [php-memcache]="php -m 2>/dev/null | grep -qx memcache"
  [php-memcached]="php -m 2>/dev/null | grep -qx memcached"
  [libcache-memcached-perl]="perl -MCache::Memcached -e1"
  [libmemcached-tools]="command -v memccp && command -v memccapable"
  [nutcracker]="command -v nutcracker || test -x /usr/sbin/nutcracker"
  [python3-pymemcache]="$PY -c 'import pymemcache'"
  [python3]="test -x $PY"
)
missing=()
for pkg in python3 php-cli php-memcache php-memcached libcache-memcached-perl \
           libmemcached-tools nutcracker python3-pymemcache; do
  bash -c "${probe[$pkg]}" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "interop: installing ${missing[*]}"
  if [ "$(id -u)" != 0 ]; then
    echo "interop: ${missing[*]} missing and not root: cannot install" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" \
    </dev/null
fi
# Debian's package is the first choice; pip is the fallback where the package is missing.
if ! $PY -c 'import pymemcache' >/dev/null 2>&1; then
  echo "interop: python3-pymemcache unavailable; installing pymemcache with pip"
  $PY -m pip install --quiet --break-system-packages pymemcache </dev/null
fi
for pkg in "${!probe[@]}"; do
  if ! bash -c "${probe[$pkg]}" >/dev/null 2>&1; then
    echo "interop: $pkg is still missing after installation" >&2
    exit 1
  fi
done
# sed reads the whole output: head would exit after one line, and a second line written
# after that kills nutcracker with SIGPIPE, which pipefail turns into a failed run.
PATH="$PATH:/usr/sbin" nutcracker -V 2>&1 | sed -n 1p
php -r 'echo "php ", PHP_VERSION, " memcache ", phpversion("memcache"), " memcached ", phpversion("memcached"), "\n";'
$PY -c 'import pymemcache; print("pymemcache", pymemcache.__version__)'
perl -MCache::Memcached -e 'print "Cache::Memcached $Cache::Memcached::VERSION\n"'
