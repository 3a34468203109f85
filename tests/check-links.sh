#!/bin/sh
# make check: every relative link in README.md, HACKING.md and docs/*.md
# names a file of the tree (and, with #anchor, a heading of that file, as
# GitHub makes anchors), and README does not point outside the tree.
set -eu
cd "$(dirname "$0")/.."
status=0

# The anchors of a Markdown file's headings: lower case, punctuation but
# '-' and '_' dropped, spaces made '-'.
anchors() {
  grep '^#' "$1" | sed 's/^#* *//' | tr 'A-Z' 'a-z' | sed 's/[^a-z0-9 _-]//g; s/ /-/g'
}

for doc in README.md HACKING.md docs/*.md; do
  [ -f "$doc" ] || { echo "check-links: $doc is missing" >&2; status=1; continue; }
  dir=$(dirname "$doc")
  # [text](target): targets without a scheme.
  for link in $(grep -o '](\([^)]*\))' "$doc" | sed 's/^](//; s/)$//' |
                grep -v '^[a-z][a-z]*:' | sort -u); do
    file=${link%%#*}
    anchor=
    case "$link" in *'#'*) anchor=${link#*#} ;; esac
    target="$dir/$file"
    [ -n "$file" ] || target=$doc
    if [ ! -e "$target" ]; then
      echo "check-links: $doc links to $file, which does not exist" >&2
      status=1
    elif [ -n "$anchor" ] && ! anchors "$target" | grep -qx -- "$anchor"; then
      echo "check-links: $doc links to $link, a heading $target does not have" >&2
      status=1
    fi
  done
done
if grep -n '\.\./shared' README.md >&2; then
  echo "check-links: README.md cites a file outside the repository" >&2
  status=1
fi
[ $status -eq 0 ] && echo "check-links: every link resolves"
exit $status
