#!/bin/sh
# Runs a command in a private network namespace with loopback up, so that
# the integration suites' servers, ports and sysctls are their own: two
# suites (two clones, a CI run beside a developer's) never collide, and
# the host's ephemeral traffic never lands in a test's range.
#   usage: unshare -n sh tests/netns.sh COMMAND [ARG...]
set -eu
ip link set lo up
exec "$@"
