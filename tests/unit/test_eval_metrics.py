"""Evaluation metrics and scoring on hand-made tables: the pass@k estimator against its closed form,
maj@k over math-verify-equivalent answers, summaries, the benchmark registry and its errors."""
import json
import math
from itertools import combinations

import pytest

from mindr1.eval import metrics as M
from mindr1.eval.benchmarks import BenchmarkError, load_benchmark, parse_benchmarks
from mindr1.eval.scoring import answer_classes, score_item, score_items
from mindr1.rl.rewards.answers import extract_final_answer
from mindr1.rl.rewards.math_checker import MathChecker


@pytest.fixture(scope="module")
def checker():
    c = MathChecker(timeout_s=2.0, grace_s=1.0)
    yield c
    c.close()


def brute_pass_at_k(n, c, k):
    """Share of the k-subsets of n samples (c of them correct) that hold a correct one."""
    correct = set(range(c))
    subsets = list(combinations(range(n), k))
    return sum(1 for s in subsets if correct & set(s)) / len(subsets)


@pytest.mark.parametrize("n, c, k", [(1, 0, 1), (1, 1, 1), (4, 0, 2), (4, 4, 3), (5, 2, 1), (5, 2, 2), (5, 2, 5),
                                     (8, 3, 4), (8, 1, 8), (10, 9, 2), (16, 5, 8), (7, 0, 7)])
def test_pass_at_k_equals_closed_form(n, c, k):
    closed = 1.0 - math.comb(n - c, k) / math.comb(n, k)
    assert M.pass_at_k(n, c, k) == pytest.approx(closed, abs=1e-12)
    assert M.pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_k_edges_and_errors():
    assert M.pass_at_k(64, 0, 64) == 0.0       # c = 0
    assert M.pass_at_k(64, 64, 1) == 1.0       # c = n
    assert M.pass_at_k(64, 1, 64) == 1.0       # k = n with one correct
    assert M.pass_at_k(1024, 3, 1) == pytest.approx(3 / 1024)
    for bad in ((4, 5, 1), (4, 1, 0), (4, 1, 5), (4, -1, 1)):
        with pytest.raises(ValueError):
            M.pass_at_k(*bad)
    assert M.ks_for(1) == [1] and M.ks_for(6) == [1, 2, 4] and M.ks_for(64)[-1] == 64
    with pytest.raises(ValueError):
        M.ks_for(0)


def test_maj_at_k_votes_and_ties():
    # classes per sample; class 0 wrong, class 1 right; None = no answer
    assert M.maj_at_k([0, 1, 1, None], [False, True], 4) == 1.0
    assert M.maj_at_k([0, 1, 1, None], [False, True], 1) == 0.0
    assert M.maj_at_k([0, 1], [False, True], 2) == 0.0          # tie: the class seen first
    assert M.maj_at_k([None, None], [], 2) == 0.0               # nobody answered
    assert M.maj_at_k([None, 1, 0, 0], [True, False], 4) == 1.0


def test_maj_at_k_treats_half_forms_as_one_answer(checker):
    answers = ["1/2", "0.5", "\\frac{1}{2}", "3", "3", None]
    classes, reps = answer_classes(answers, lambda a, b: checker.check(a, b) == 1.0)
    assert classes[0] == classes[1] == classes[2]
    assert classes[3] == classes[4] != classes[0] and classes[5] is None
    responses = [f"so \\boxed{{{a}}}" for a in answers[:5]] + ["no idea"]
    item = score_item("q", responses, "0.5", checker)
    assert item["correct"] == [True, True, True, False, False, False]
    # one vote per form: 3 votes for a half against 2 for 3
    assert M.maj_at_k(item["classes"], item["class_correct"], 6) == 1.0
    assert M.maj_at_k(item["classes"], item["class_correct"], 1) == 1.0


def test_score_items_batches_a_chunk_as_score_item_scores_each(checker):
    """The runner scores a chunk in one verifier batch: the records equal item-by-item scoring."""
    chunk = [("q1", ["so \\boxed{1/2}", "\\boxed{0.5}", "7"], "0.5"),
             ("q2", ["\\boxed{\\frac{\\sqrt{8}}{2}}", "#### 3", "<answer>\\sqrt{2}</answer>"], "\\sqrt{2}"),
             ("q3", ["\\boxed{x^2+2x+1}", "\\boxed{(x+1)^2}"], "(x+1)^2")]
    batched = score_items([q for q, _, _ in chunk], [r for _, r, _ in chunk], [g for _, _, g in chunk], checker,
                          lengths=[[1] * len(r) for _, r, _ in chunk])
    single = [score_item(q, r, g, checker, lengths=[1] * len(r)) for q, r, g in chunk]
    assert batched == single
    assert [b["correct"] for b in batched] == [[True, True, False], [True, False, True], [True, True]]


def test_summarize_and_overall_on_a_table():
    def rec(correct, lengths, truncated, formatted, classes, class_correct, timeouts=0):
        return {"correct": correct, "lengths": lengths, "truncated": truncated, "formatted": formatted,
                "classes": classes, "class_correct": class_correct, "timeouts": timeouts}

    items = [rec([True, False, True, True], [10, 20, 30, 40], [False, False, False, True],
                 [True, True, False, False], [0, 1, 0, 0], [True, False]),
             rec([False] * 4, [5, 5, 5, 5], [False] * 4, [False] * 4, [0, 0, 1, 1], [False, False], timeouts=1)]
    s = M.summarize(items, 4)
    assert s["pass@1"] == pytest.approx((0.75 + 0.0) / 2)
    assert s["pass@1_stderr"] == pytest.approx(math.sqrt(((0.75 - 0.375) ** 2 * 2) / 1 / 2))
    assert s["pass@2"] == pytest.approx((1 - math.comb(1, 2) / math.comb(4, 2)) / 2)
    assert s["pass@4"] == pytest.approx(0.5)
    assert s["maj@4"] == pytest.approx(0.5) and s["maj@1"] == pytest.approx(0.5)
    assert s["format_rate"] == pytest.approx(2 / 8)
    assert s["response_length_mean"] == pytest.approx(120 / 8) and s["response_length_max"] == 40
    assert s["truncated_frac"] == pytest.approx(1 / 8) and s["timeouts"] == 1 and s["n_items"] == 2
    o = M.overall({"a": s, "b": dict(s, **{"pass@1": 0.125})})
    assert o["pass@1"] == pytest.approx(0.25) and o["n_items"] == 4 and o["timeouts"] == 2


def test_extraction_boxed_answer_tag_and_gsm8k_marker():
    assert extract_final_answer("<think>x</think><answer>\\boxed{7}</answer>") == "7"
    assert extract_final_answer("so \\boxed{\\frac{1}{2}} done") == "\\frac{1}{2}"
    assert extract_final_answer("Natalia sold 72 clips.\n#### 72\nmore text") == "72"
    assert extract_final_answer("#### 1,234.") == "1234"
    assert extract_final_answer("#### 72", require_answer_tag=True) is None
    assert extract_final_answer("plain 72") is None


def test_require_format_counts_only_tagged_answers(checker):
    plain = score_item("q", ["\\boxed{4}", "<think>a</think><answer>4</answer>"], "4", checker, require_format=True)
    assert plain["correct"] == [False, True] and plain["formatted"] == [False, True]
    prefilled = score_item("<|im_start|>assistant\n<think>\n", ["sum\n</think>\n<answer>4</answer>"], "4", checker)
    assert prefilled["formatted"] == [True]


def test_verifier_timeout_scores_wrong_and_is_counted():
    slow = MathChecker(timeout_s=0.05, grace_s=0.5)
    try:
        # a power tower sympy cannot settle in 50 ms
        item = score_item("q", ["\\boxed{2^{2^{2^{2^{2^{22}}}}} - 2^{2^{2^{2^{2^{22}}}}}}"], "x^2+1", slow)
    finally:
        slow.close()
    assert item["correct"] == [False]
    assert item["timeouts"] == 1, item["statuses"]


def test_benchmark_registry_and_errors(tmp_path):
    gsm = load_benchmark("gsm8k")
    assert len(gsm.items) == 1319 and gsm.items[0].answer == "18"
    assert len(load_benchmark("math500").items) == 500
    assert len(load_benchmark("aime24").items) == 30
    amc = load_benchmark("amc23")
    assert len(amc.items) == 40 and amc.items[0].answer == "27"
    assert len(load_benchmark("gsm8k", limit=5).items) == 5
    rnd = load_benchmark("gsm8k", limit=5, subset="random", seed=3)
    assert [i.id for i in rnd.items] == [i.id for i in load_benchmark("gsm8k", limit=5, subset="random", seed=3).items]
    assert rnd.fingerprint != load_benchmark("gsm8k", limit=5).fingerprint
    rg = load_benchmark("reasoning_gym:chain_sum:size=6,min_terms=2,max_terms=2", seed=7)
    assert len(rg.items) == 6 and rg.fingerprint == load_benchmark(
        "reasoning_gym:chain_sum:size=6,min_terms=2,max_terms=2", seed=7).fingerprint
    with pytest.raises(BenchmarkError, match="known: aime24, amc23, gsm8k, math500"):
        load_benchmark("gsm9k")
    path = tmp_path / "mine.jsonl"
    path.write_text(json.dumps({"q": "1+1?", "a": "2"}) + "\n" + json.dumps({"q": "2+2?"}) + "\n")
    with pytest.raises(BenchmarkError, match=r"mine.jsonl: line 2: no answer column 'a'"):
        load_benchmark(f"jsonl:{path}", {"question": "q", "answer": "a"})
    with pytest.raises(BenchmarkError, match="no question column 'question'"):
        load_benchmark(f"jsonl:{path}")
    assert parse_benchmarks("gsm8k,reasoning_gym:chain_sum:size=8,min_terms=2,amc23") == [
        "gsm8k", "reasoning_gym:chain_sum:size=8,min_terms=2", "amc23"]
