#!/bin/sh
# Runs a command in a private network namespace with loopback up, so that
# the integration suites' servers, ports and sysctls are their own: two
# suites (two clones, a CI run beside a developer's) never collide, and
# the host's ephemeral traffic never lands in a test's range.
# In a private mount namespace as well (the Makefile's NETNS), the
# collector's directory /run/portfence is a tmpfs of the run's own, so that
# a daemon a test starts never leaves a socket that the host's (or another
# run's) shim processes would find.
#   usage: unshare -n [-m --propagation private] sh tests/netns.sh COMMAND [ARG...]
set -eu
ip link set lo up
if [ "$(readlink /proc/self/ns/mnt)" != "$(readlink /proc/1/ns/mnt)" ]; then
  mkdir -p /run/portfence
  mount -t tmpfs -o mode=0755 tmpfs /run/portfence
fi
exec "$@"
