#!/bin/sh
# Builds the fuzzers' seed corpora in DIR from the fixtures and rule list.
set -eu
DIR=$1
mkdir -p "$DIR/corpus-policy" "$DIR/corpus-rule"
for f in tests/fixtures/valid/*.conf tests/fixtures/valid/dir/*.conf tests/fixtures/invalid/*.conf example.conf; do
  cp "$f" "$DIR/corpus-policy/$(echo "$f" | tr / _)"
done
n=0
while IFS= read -r rule; do
  n=$((n + 1))
  printf '%s' "$rule" > "$DIR/corpus-rule/seed-$n"
done < tests/fuzz/rules.txt
