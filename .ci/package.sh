#!/usr/bin/env bash
# Builds the Debian package (cargo deb, a release build) and checks it: its contents and
# conffiles, lintian (errors fail, warnings are shown), the systemd unit, and `gsmgw check` of
# the packaged config run from a throw-away root. Safe to run again; reuses the build.
set -euo pipefail
cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive
have() { command -v "$1" >/dev/null 2>&1; }
apt_updated=
apt_install() {
  [ -n "$apt_updated" ] || { apt-get update -qq; apt_updated=1; }
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

have cargo-deb || cargo install cargo-deb --locked
have systemd-analyze || apt_install systemd
have lintian || apt_install lintian || echo "package.sh: lintian unavailable, skipped"

target="${CARGO_TARGET_DIR:-target}"
deb="$target/debian/gsmgw.deb"
mkdir -p "$target/debian"
started=$(date +%s)
# PACKAGE_NO_BUILD=1: package the release build that is there (after editing packaging only;
# any change to Cargo.toml makes cargo rebuild the crate, which takes minutes with fat LTO).
cargo deb ${PACKAGE_NO_BUILD:+--no-build} --output "$deb"
echo "package.sh: cargo deb took $(( $(date +%s) - started )) s"

echo "== contents"
contents=$(dpkg-deb -c "$deb")
echo "$contents"
for path in ./usr/bin/gsmgw ./etc/gsmgw/gsmgw.toml ./usr/lib/systemd/system/gsmgw.service \
    ./usr/lib/udev/rules.d/60-gsmgw-gpio.rules ./usr/share/gsmgw/plugins/call_reject_conn.lua; do
  grep -q " $path\$" <<<"$contents" || { echo "package.sh: $path missing from the package"; exit 1; }
done

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
dpkg-deb -e "$deb" "$root/DEBIAN"
grep -qx /etc/gsmgw/gsmgw.toml "$root/DEBIAN/conffiles" \
  || { echo "package.sh: /etc/gsmgw/gsmgw.toml is not a conffile"; exit 1; }
grep -q "adduser --system --group" "$root/DEBIAN/postinst" \
  || { echo "package.sh: postinst does not create the gsmgw user"; exit 1; }
rm -rf "$root/DEBIAN"

if have lintian; then
  echo "== lintian"
  # Errors fail the run; warnings and notes are printed for a human to judge.
  lintian --fail-on error --suppress-tags-from-file packaging/lintian-suppressed "$deb"
fi

echo "== install into $root and check"
dpkg -x "$deb" "$root"
# The packaged config names absolute paths; point them into the throw-away root.
sed -i -e "s#\"/etc/gsmgw#\"$root/etc/gsmgw#g" \
       -e "s#\"/usr/share/gsmgw#\"$root/usr/share/gsmgw#g" \
       -e "s#\"/var/lib/gsmgw#\"$root/var/lib/gsmgw#g" "$root/etc/gsmgw/gsmgw.toml"
"$root/usr/bin/gsmgw" --version
# check looks for the modem port and resolves the GPIO lines on the real chip; CI has neither,
# so those two keys are overridden from the environment, as on any machine without the board.
GSMGW_GPIO__BACKEND=sim GSMGW_MODEM__PORT=/dev/null \
  "$root/usr/bin/gsmgw" check -c "$root/etc/gsmgw/gsmgw.toml"

echo "== systemd-analyze verify"
# Against the unpacked root, so that ExecStart's /usr/bin/gsmgw exists without installing
# it on this machine. The root also needs the units ours refers to (sysinit.target, …) and
# ExecReload's /bin/kill: copied from this machine, ours kept. No man pages in CI.
cp -an /usr/lib/systemd/system/. "$root/usr/lib/systemd/system/"
mkdir -p "$root/bin"
cp "$(type -P kill)" "$root/bin/kill"
systemd-analyze verify --man=no --root="$root" /usr/lib/systemd/system/gsmgw.service
echo "package.sh: OK $deb ($(du -h "$deb" | cut -f1)), binary $(du -h "$root/usr/bin/gsmgw" | cut -f1)"
