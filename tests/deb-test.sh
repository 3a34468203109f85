#!/bin/sh
# The Debian package: `make deb` builds it, lintian finds no error in it,
# dpkg installs it, the installed tool validates the installed example
# and runs a program with the installed shim, the installed unit passes
# systemd-analyze verify, and dpkg removes it all.  Root only (dpkg).
#   usage: sh tests/deb-test.sh BUILD_DIR
set -eu
build=${1:-build}
fail() { echo "deb-test: FAIL: $*" >&2; exit 1; }

if [ "$(id -u)" -ne 0 ]; then
  echo "deb-test: SKIPPED (dpkg -i needs root)" >&2
  exit 0
fi
# A portfence installed on this machine by someone else is not ours to
# remove.
if dpkg-query -W -f='${Status}' portfence 2>/dev/null | grep -q "install ok installed"; then
  echo "deb-test: SKIPPED (a portfence package is already installed here)" >&2
  exit 0
fi

make -s --no-print-directory deb BUILD="$build" > "$build/deb.log" 2>&1 || { tail -30 "$build/deb.log" >&2; fail "make deb"; }
deb=$(ls "$build"/portfence_*_*.deb)
version=$(dpkg-parsechangelog -l debian/changelog -S Version)
arch=$(dpkg --print-architecture)
[ "$deb" = "$build/portfence_${version}_${arch}.deb" ] || fail "package named $deb"

lintian --fail-on error "$deb" > "$build/lintian.txt" 2>&1 ||
  { cat "$build/lintian.txt" >&2; fail "lintian reports errors"; }
echo "deb-test: lintian: $(grep -c '^E:' "$build/lintian.txt" || true) errors, $(grep -c '^W:' "$build/lintian.txt" || true) warnings"

dpkg -i "$deb" > "$build/dpkg.log" 2>&1 || { cat "$build/dpkg.log" >&2; fail "dpkg -i"; }
trap 'dpkg -r portfence > /dev/null 2>&1 || true' EXIT

for path in /usr/bin/portfence /usr/lib/portfence/libportfence.so \
    /usr/share/man/man1/portfence.1.gz /usr/share/man/man5/portfence.conf.5.gz \
    /usr/share/doc/portfence/example.conf /usr/share/doc/portfence/README.md /etc/logrotate.d/portfence \
    /lib/systemd/system/portfence.service /usr/share/bash-completion/completions/portfence \
    /usr/share/doc/portfence/examples/systemd/shim-dropin.conf; do
  [ -e "$path" ] || fail "$path not installed"
done
/usr/bin/portfence check -c /usr/share/doc/portfence/example.conf > /dev/null ||
  fail "portfence check on the installed example"
preload=$(/usr/bin/portfence run -c /usr/share/doc/portfence/example.conf -- sh -c 'echo "$LD_PRELOAD"')
case $preload in
  */usr/lib/portfence/libportfence.so*) ;;
  *) fail "run preloaded '$preload', not /usr/lib/portfence/libportfence.so" ;;
esac
# The installed unit, with its binary and man pages in place.
verify=$(systemd-analyze verify /lib/systemd/system/portfence.service 2>&1) || fail "systemd-analyze verify: $verify"
[ -z "$verify" ] || fail "systemd-analyze verify: $verify"
logrotate -d /etc/logrotate.d/portfence > "$build/logrotate-debug.txt" 2>&1 ||
  { cat "$build/logrotate-debug.txt" >&2; fail "logrotate rejects /etc/logrotate.d/portfence"; }

dpkg -r portfence > "$build/dpkg.log" 2>&1 || { cat "$build/dpkg.log" >&2; fail "dpkg -r"; }
trap - EXIT
[ ! -e /usr/bin/portfence ] || fail "/usr/bin/portfence left after dpkg -r"
[ ! -e /usr/lib/portfence/libportfence.so ] || fail "the shim left after dpkg -r"
echo "deb-test: ok ($deb)"
