#!/usr/bin/env bash
# Rebuilds SparseTune's bundled demo data from Debian's `fortunes` package (BSD licence; see README "Demo").
#   demo/data/fortunes-{train,eval}.jsonl : fortune cookies labelled by the file (category) they come from
#   demo/corpus/fortunes-corpus.txt        : every OTHER category, one cookie per paragraph, for `sparsetune pretrain`
# The categories used downstream are kept out of the pretraining corpus, so the demo never trains on its eval text.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download fortunes fortunes-min >/dev/null 2>&1 && for f in *.deb; do dpkg -x "$f" x; done)
src="$work/x/usr/share/games/fortunes"
labels=(computers food sports startrek)
per_class=150; eval_per_class=30; max_chars=400

# One cookie per line, whitespace collapsed; cookies are separated by lines holding only '%'.
cookies() { awk 'BEGIN{RS="\n%\n"} { gsub(/[[:cntrl:]]+/, " "); gsub(/ +/, " "); sub(/^ /, ""); sub(/ $/, ""); if (length($0) > 0) print }' "$1"; }
json() { sed -e 's/\\/\\\\/g' -e 's/"/\\"/g'; }

mkdir -p "$here/data" "$here/corpus"
: > "$here/data/fortunes-train.jsonl"; : > "$here/data/fortunes-eval.jsonl"
for label in "${labels[@]}"; do
  cookies "$src/$label" | awk -v m=$max_chars -v n=$per_class 'length($0) <= m && c < n { print; c++ }' | json > "$work/$label"
  head -n $((per_class - eval_per_class)) "$work/$label" | awk -v l="$label" '{printf "{\"text\": \"%s\", \"label\": \"%s\"}\n", $0, l}' >> "$work/train"
  tail -n $eval_per_class "$work/$label" | awk -v l="$label" '{printf "{\"text\": \"%s\", \"label\": \"%s\"}\n", $0, l}' >> "$here/data/fortunes-eval.jsonl"
done
# Interleave classes in the training file (the trainer shuffles anyway; this keeps the file readable).
awk '{ print NR % 4, NR, $0 }' "$work/train" | sort -k1,1n -k2,2n | cut -d' ' -f3- > "$here/data/fortunes-train.jsonl"

: > "$here/corpus/fortunes-corpus.txt"
for f in "$src"/*; do
  name=$(basename "$f")
  case "$name" in *.dat|*.u8|ascii-art|computers|food|sports|startrek) continue;; esac
  cookies "$f" | awk '{ print; print "" }' >> "$here/corpus/fortunes-corpus.txt"
done
wc -l "$here"/data/*.jsonl; wc -c "$here/corpus/fortunes-corpus.txt"
