"""Decontamination on real data: copies of GSM8K / MATH-500 test questions (verbatim, re-cased,
re-punctuated) planted inside real GSM8K / MATH train rows are all removed, each matched to the
item it copies, and no other row is; bad input writes nothing."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mindr1.artifacts import gsm8k_path, math_path
from mindr1.eval.benchmarks import load_benchmark
from mindr1.eval.decontaminate import build_index, decontaminate, normalise

ROOT = Path(__file__).resolve().parents[2]


def _rows(path, n, q, a):
    return [{"question": r[q], "answer": r[a]} for r in map(json.loads, path.read_text().splitlines()[:n])]


def recase(text: str) -> str:
    return "".join(c.upper() if i % 3 == 0 else c.lower() for i, c in enumerate(text))


def repunctuate(text: str) -> str:
    return re.sub(r"[,.?!$]", lambda m: {",": " ;", ".": " ...", "?": "!", "!": "?", "$": ""}[m.group()], text)


def test_normalise():
    assert normalise("Janet’s ducks, LAY 16 eggs!") == ["janet", "s", "ducks", "lay", "16", "eggs"]


def test_planted_copies_removed_and_clean_rows_kept(tmp_path):
    hosts = _rows(gsm8k_path("train"), 400, "question", "answer") + _rows(math_path("train"), 400, "problem", "solution")
    index = build_index(["gsm8k", "math500"])
    _, baseline = decontaminate([dict(r, _where=f"row {i}") for i, r in enumerate(hosts)], index, None)
    genuine = {r["row"] for r in baseline}  # real near-duplicates of test questions in the train split
    assert len(genuine) <= len(hosts) // 100, baseline[:3]
    gsm, m500 = load_benchmark("gsm8k").items, load_benchmark("math500").items
    sources = [("gsm8k", it) for it in gsm[:15]] + [("math500", it) for it in m500[:15]]
    free = [i for i in range(len(hosts)) if i not in genuine]
    planted = {}
    for k, ((bench, item), row) in enumerate(zip(sources, free[::20])):
        copy = (item.question, recase(item.question), repunctuate(item.question))[k % 3]
        words = hosts[row]["question"].split(" ")
        hosts[row]["question"] = " ".join(words[:5] + [copy] + words[5:])  # inside the real row
        planted[row] = (bench, item.id)
    src = tmp_path / "train.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in hosts))
    out = tmp_path / "clean.jsonl"
    proc = subprocess.run([sys.executable, "tools/decontaminate.py", "--input", str(src), "--output", str(out),
                           "--benchmarks", "gsm8k,math500"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "clean.jsonl.report.json").read_text())
    removed = {r["row"]: (r["benchmark"], r["item_id"]) for r in report["removed"]}
    assert {r: removed[r] for r in planted} == planted  # every copy, matched to the item it copies
    assert set(removed) == set(planted) | genuine      # and no clean row
    kept = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(kept) == len(hosts) - len(removed) == report["rows_out"]
    assert kept == [h for i, h in enumerate(hosts) if i not in removed]


def test_bad_column_names_the_line_and_writes_nothing(tmp_path):
    src = tmp_path / "train.jsonl"
    src.write_text(json.dumps({"question": "a"}) + "\n" + json.dumps({"prompt": "b"}) + "\n")
    out = tmp_path / "clean.jsonl"
    proc = subprocess.run([sys.executable, "tools/decontaminate.py", "--input", str(src), "--output", str(out),
                           "--map-keys", '{"text": "question"}', "--benchmarks", "aime24"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "train.jsonl: line 2: no column 'question'" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()
    proc = subprocess.run([sys.executable, "tools/decontaminate.py", "--input", str(src), "--output", str(out),
                           "--benchmarks", "gsm9k"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown benchmark 'gsm9k'" in proc.stderr and not out.exists()


@pytest.mark.parametrize("coverage, expect", [(0.0, True), (0.5, False)])
def test_coverage_rule(coverage, expect):
    index = build_index(["aime24"])
    q = load_benchmark("aime24").items[0].question
    one_gram = " ".join(normalise(q)[:9])  # a single shared 8-gram (two, in fact) out of many
    hit = index.match("Unrelated text. " + one_gram + " and more unrelated words here.", coverage)
    assert (hit is not None) == expect
    assert index.match(recase(q), 0.5)[2] == pytest.approx(1.0)
