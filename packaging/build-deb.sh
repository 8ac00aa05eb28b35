#!/bin/sh
# Builds the repcached .deb from an already built binary, with dpkg-deb alone.
#
# usage: packaging/build-deb.sh BINARY OUTDIR   (run from the repository root; make deb does)
#
# dpkg-deb is on every Debian system, so packaging needs no extra cargo tool (cargo-deb
# would be another crate to fetch and build in CI) and no debhelper source package for a
# binary, a manual page, two units and a defaults file. The layout follows Debian's
# conventions: stripped binary, compressed manual page, units under /lib/systemd/system,
# the defaults file as a conffile (dpkg never overwrites an edited one).
set -eu

bin=$1
out=$2
name=repcached
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
arch=$(dpkg --print-architecture)
[ -n "$version" ] || { echo "build-deb: no version in Cargo.toml" >&2; exit 1; }
[ -x "$bin" ] || { echo "build-deb: $bin is not an executable" >&2; exit 1; }

stage=$out/${name}_${version}_${arch}
rm -rf "$stage"
mkdir -p "$stage/DEBIAN" "$stage/usr/bin" "$stage/usr/share/man/man1" \
    "$stage/lib/systemd/system" "$stage/etc/default" "$stage/usr/share/doc/$name"

install -m 0755 "$bin" "$stage/usr/bin/$name"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$stage/usr/bin/$name"
gzip -9n < man/$name.1 > "$stage/usr/share/man/man1/$name.1.gz"
install -m 0644 packaging/$name.service packaging/$name@.service "$stage/lib/systemd/system/"
install -m 0644 packaging/$name.default "$stage/etc/default/$name"
install -m 0644 README.md docs/OPERATIONS.md docs/REPLICATION.md "$stage/usr/share/doc/$name/"
"$bin" -i > "$stage/usr/share/doc/$name/copyright"
chmod 0644 "$stage/usr/share/doc/$name/copyright"

# The newest glibc symbol version the binary links against is the libc6 it needs.
glibc=$(objdump -T "$stage/usr/bin/$name" | sed -n 's/.*GLIBC_\([0-9.]*\).*/\1/p' | sort -uV | tail -n 1)
depends="adduser"
[ -n "$glibc" ] && depends="libc6 (>= $glibc), $depends"

for script in postinst prerm postrm; do
    install -m 0755 packaging/debian/$script "$stage/DEBIAN/$script"
done
echo "/etc/default/$name" > "$stage/DEBIAN/conffiles"
(cd "$stage" && find usr lib -type f -exec md5sum {} + | sort -k 2) > "$stage/DEBIAN/md5sums"

cat > "$stage/DEBIAN/control" <<CONTROL
Package: $name
Version: $version
Architecture: $arch
Maintainer: repcached maintainers <maintainers@repcached.invalid>
Installed-Size: $(du -sk --exclude=DEBIAN "$stage" | cut -f 1)
Depends: $depends
Section: net
Priority: optional
Description: memcached-compatible cache server that replicates between two nodes
 repcached speaks memcached 1.6's text protocol byte for byte and takes its
 command-line options, so it can replace memcached without a client noticing.
 Two nodes started as each other's peer form a multi-master pair: every change
 reaches the other node, and a restarted node copies its peer's data before it
 serves. The systemd units are installed but not enabled: configure
 /etc/default/repcached, then systemctl enable --now repcached.
CONTROL

deb=$out/${name}_${version}_${arch}.deb
dpkg-deb --root-owner-group --build "$stage" "$deb" >/dev/null
echo "$deb"
