#!/bin/sh
# Installs the Debian packages that building and testing portfence need.
# As root it installs what is missing; otherwise it prints the exact line.
set -eu
# What `make deb` needs: debian/control's Build-Depends and the tools.
DEB_PACKAGES="dpkg-dev debhelper lintian libconfig-dev libjansson-dev libglib2.0-dev clang libbpf-dev bpftool"
PACKAGES="gcc make libc6-dev libconfig-dev libcriterion-dev libjansson-dev \
  curl wget netcat-openbsd socat dnsutils dnsmasq-base python3 iproute2 \
  procps groff-base libcap2-bin nginx-light apache2-utils golang-go \
  clang libbpf-dev bpftool liburing-dev util-linux \
  prometheus logrotate systemd runc busybox-static tftpd-hpa tftp-hpa strace $DEB_PACKAGES"

# `install-deps.sh probe` installs nothing: it says what this host lacks
# for each part (make probe).
# `install-deps.sh build` checks only what `make` needs to compile;
# `install-deps.sh fuzz` adds what `make fuzz` needs; `install-deps.sh deb`
# checks what `make deb` needs.
[ "${1:-}" = build ] && PACKAGES="gcc make libc6-dev libconfig-dev libjansson-dev libglib2.0-dev clang libbpf-dev bpftool"
[ "${1:-}" = fuzz ] && PACKAGES="$PACKAGES clang libclang-rt-14-dev"
[ "${1:-}" = deb ] && PACKAGES="gcc make libc6-dev $DEB_PACKAGES"
# `install-deps.sh demo`: what `make demo` needs: the build, curl and
# python3 (its server).
[ "${1:-}" = demo ] && PACKAGES="gcc make libc6-dev libconfig-dev libjansson-dev libglib2.0-dev pkg-config clang libbpf-dev bpftool curl python3"
# A second argument `list` prints the packages and installs nothing.
if [ "${2:-}" = list ]; then
  echo $PACKAGES
  exit 0
fi

lacking() {
  out=""
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || out="$out $pkg"
  done
  echo "${out:- nothing}"
}
if [ "${1:-}" = probe ]; then
  echo "make BPF=0 (shim and tool) lacks:$(lacking gcc make libc6-dev libconfig-dev libjansson-dev libglib2.0-dev pkg-config)"
  echo "make (the BPF backend too) lacks:$(lacking clang libbpf-dev bpftool)"
  echo "make check lacks:$(lacking libcriterion-dev)"
  echo "make test lacks:$(lacking $PACKAGES)"
  [ -r /sys/kernel/btf/vmlinux ] && echo "kernel BTF: yes" ||
    echo "kernel BTF: no (/sys/kernel/btf/vmlinux): run --bpf cannot load"
  if grep -q ' cgroup2 ' /proc/self/mounts; then echo "cgroup v2: yes"; else
    echo "cgroup v2: no: run --bpf cannot attach"; fi
  [ "$(id -u)" -eq 0 ] && echo "root: yes" || echo "root: no (run --bpf, make deps and the integration tests need it)"
  exit 0
fi

missing=""
for pkg in $PACKAGES; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  case "$status" in
    *"install ok installed"*) ;;
    *) missing="$missing $pkg" ;;
  esac
done
[ -z "$missing" ] && exit 0

line="apt-get install -y$missing"
if [ "$(id -u)" -ne 0 ]; then
  echo "portfence: missing Debian packages; run as root:" >&2
  echo "  $line" >&2
  exit 1
fi
echo "portfence: installing:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq $missing >/dev/null
