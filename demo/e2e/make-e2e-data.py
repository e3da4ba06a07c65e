#!/usr/bin/env python3
"""Rebuilds demo/e2e/*.jsonl from the E2E NLG Challenge dataset (Novikova, Dusek and Rieser, SIGDIAL 2017;
https://github.com/tuetschek/e2e-dataset, CC BY-SA 4.0). Python standard library only; run once, the outputs are
committed and nothing in SparseTune runs Python.

usage: python3 make-e2e-data.py DIR    (DIR holds devset.csv and testset_w_refs.csv of that repository)

e2e-train.jsonl: every row of devset.csv (the full trainset.csv is 42k rows, more than a 2-core demo needs).
e2e-eval.jsonl:  the rows of the first 60 meaning representations of testset_w_refs.csv, all references kept.
"""
import csv, json, os, sys

src = sys.argv[1]
here = os.path.dirname(os.path.abspath(__file__))

def rows(name):
    with open(os.path.join(src, name), newline="", encoding="utf-8") as f:
        return [(r["mr"], r["ref"]) for r in csv.DictReader(f)]

def write(name, pairs):
    with open(os.path.join(here, name), "w", encoding="utf-8", newline="\n") as f:
        for mr, ref in pairs:
            f.write(json.dumps({"meaning_representation": mr, "reference": ref}, ensure_ascii=False) + "\n")

write("e2e-train.jsonl", rows("devset.csv"))
test = rows("testset_w_refs.csv")
kept, seen = [], []
for mr, ref in test:
    if mr not in seen:
        if len(seen) == 60:
            break
        seen.append(mr)
    kept.append((mr, ref))
write("e2e-eval.jsonl", kept)
