#!/bin/sh
# make check: every relative link in README.md, HACKING.md and docs/*.md
# names a file of the tree, and README does not point outside it.
set -eu
cd "$(dirname "$0")/.."
status=0
for doc in README.md HACKING.md docs/*.md; do
  [ -f "$doc" ] || { echo "check-links: $doc is missing" >&2; status=1; continue; }
  dir=$(dirname "$doc")
  # [text](target): targets without a scheme or a leading #.
  for target in $(grep -o '](\([^)#][^)]*\))' "$doc" | sed 's/^](//; s/)$//; s/#.*//' |
                  grep -v '^[a-z][a-z]*:' | sort -u); do
    [ -e "$dir/$target" ] || { echo "check-links: $doc links to $target, which does not exist" >&2; status=1; }
  done
done
if grep -n '\.\./shared' README.md >&2; then
  echo "check-links: README.md cites a file outside the repository" >&2
  status=1
fi
[ $status -eq 0 ] && echo "check-links: every link resolves"
exit $status
