"""Verifiers on tables of real-looking completions, the time limits on adversarial ones, and the
registry / weighting rules."""
import os
import signal
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from mindr1.rl.rewards import compute_rewards, get_verifier, register_verifier, reward_metrics
from mindr1.rl.rewards.answers import extract_final_answer, extract_gsm8k_answer, normalize_ground_truth
from mindr1.rl.rewards.math_checker import MathChecker
from mindr1.rl.rewards.verifiers import score_answer

LIMIT_S, GRACE_S = 1.0, 1.0
BOUND_S = 10 * (LIMIT_S + GRACE_S)  # "returned within its own limit", with generous slack

GSM8K_SOLUTION = ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
                  "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72")


@pytest.fixture(scope="module")
def checker():
    c = MathChecker(timeout_s=LIMIT_S, grace_s=GRACE_S)
    yield c
    c.close()


def tagged(answer, think="Let me compute step by step."):
    return f"<think>\n{think}\n</think>\n<answer>\n{answer}\n</answer>"


ACC_TABLE = [
    # (completion, label, expected)
    (tagged("\\boxed{18}"), "#### 18", 1.0),
    (tagged("The total is \\boxed{72}."), GSM8K_SOLUTION, 1.0),
    (tagged("\\boxed{17}"), "#### 18", 0.0),
    (tagged("\\boxed{0.5}"), "\\frac{1}{2}", 1.0),
    (tagged("\\boxed{1/2}"), "0.5", 1.0),
    (tagged("\\boxed{\\dfrac{1}{2}}"), "1/2", 1.0),
    (tagged("\\boxed{\\frac{1}{2}}"), "$0.5$", 1.0),
    (tagged("\\boxed{0.6}"), "\\frac{1}{2}", 0.0),
    (tagged("\\boxed{\\frac{\\sqrt{2}}{2}}"), "\\sqrt{2}/2", 1.0),
    (tagged("\\boxed{1,000}"), "1000", 1.0),
    (tagged("\\boxed{\\$18}"), "#### 18", 1.0),
    (tagged("\\boxed{3} wait, no: \\boxed{4}"), "4", 1.0),           # the last box counts
    (tagged("42"), "42", 1.0),                                       # reasoning-gym style
    (tagged(" Yes "), "yes", 1.0),
    (tagged("I am not sure"), "18", 0.0),                            # unparsable
    ("<think>\nThe sum is 5, so\n", "5", 0.0),                       # truncated, no answer
    ("So the answer is \\boxed{7}.", "7", 1.0),                      # untagged boxed still read
    (tagged("\\boxed{5}"), "so the answer is $\\boxed{5}$.", 1.0),   # MATH-style solution label
    (tagged("\\boxed{5}"), None, None),                              # no ground truth: n/a
    (tagged("\\boxed{5}"), "", None),
]


@pytest.mark.parametrize("completion, label, expected", ACC_TABLE)
def test_acc_table(checker, completion, label, expected):
    assert score_answer(completion, label, checker) == expected


def test_acc_require_answer_tag(checker):
    assert score_answer("So the answer is \\boxed{7}.", "7", checker, require_answer_tag=True) == 0.0


def test_acc_registered_verifier_and_labels_column():
    acc = get_verifier("acc")
    completions = [tagged("\\boxed{18}"), tagged("\\boxed{19}"), [{"role": "assistant", "content": tagged("18")}]]
    assert acc(["q"] * 3, completions, labels=["#### 18"] * 3) == [1.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="labels"):
        acc(["q"], [tagged("1")])


def test_acc_from_non_main_threads(checker):
    # math-verify's own timeout needs the main thread; ours must work from a Ray-style thread pool
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda row: score_answer(row[0], row[1], checker), ACC_TABLE))
    assert got == [row[2] for row in ACC_TABLE]


def test_answer_extraction_helpers():
    assert extract_gsm8k_answer(GSM8K_SOLUTION) == "72"
    assert extract_gsm8k_answer("#### 1,234") == "1234"
    assert extract_gsm8k_answer("#### $5.") == "5"
    assert extract_gsm8k_answer("no marker 18") is None
    assert normalize_ground_truth("$\\frac{1}{2}$") == "\\frac{1}{2}"
    assert normalize_ground_truth("#### -3") == "-3"
    assert extract_final_answer(tagged("\\boxed{\\frac{a}{\\sqrt{b}}}")) == "\\frac{a}{\\sqrt{b}}"
    assert extract_final_answer("<answer>\\boxed{unclosed</answer>") == "\\boxed{unclosed"


# ---------------------------------------------------------------- adversarial inputs


def _timed(fn, *args):
    start = time.monotonic()
    out = fn(*args)
    return out, time.monotonic() - start


HUGE_NUMBER = "9" * 10 ** 6
NESTED = "{" * 10_000 + "1" + "}" * 10_000
PROSE_100KB = ("We add the numbers again and again, carefully. " * 2200)[:100_000]


@pytest.mark.parametrize("pred", [HUGE_NUMBER, NESTED, PROSE_100KB, "9^{9^{9^{9}}}", "10^{10^{10}}-1"],
                         ids=["1e6-digits", "10k-braces", "100kB-text", "power-tower", "huge-power"])
def test_checker_adversarial_returns_within_limit(checker, pred):
    score, elapsed = _timed(checker.check, "1", pred)
    assert score == 0.0 and elapsed < BOUND_S


@pytest.mark.parametrize("completion", [
    tagged("\\boxed{" + HUGE_NUMBER + "}"),
    tagged("\\boxed" + NESTED),
    tagged(PROSE_100KB + "\\boxed{18}"),
    "<answer>" * 20_000 + "\\boxed{" * 5000,
])
def test_acc_adversarial_completions(checker, completion):
    score, elapsed = _timed(score_answer, completion, "18", checker)
    assert isinstance(score, float) and elapsed < BOUND_S


def test_checker_enforces_its_limit_inside_the_worker(checker):
    before = checker.stats.get("timeout", 0)
    score, elapsed = _timed(checker.check, "1", "9^{9^{9^{9}}}")
    assert score == 0.0 and elapsed < BOUND_S
    assert checker.stats["timeout"] == before + 1


def test_hung_worker_is_killed_at_the_deadline_and_replaced():
    c = MathChecker(timeout_s=LIMIT_S, grace_s=GRACE_S)
    try:
        assert c.check("2", "\\sqrt{4}") == 1.0
        os.kill(c.worker_pid, signal.SIGSTOP)  # a hang no in-worker timer can interrupt
        score, elapsed = _timed(c.check, "2", "\\sqrt{4}")
        assert score == 0.0 and LIMIT_S + GRACE_S <= elapsed < BOUND_S
        assert any(k.startswith("killed") for k in c.stats)
        assert c.check("2", "\\sqrt{4}") == 1.0  # a fresh worker
        os.kill(c.worker_pid, signal.SIGKILL)    # a worker that died between items
        time.sleep(0.1)
        assert c.check("2", "\\sqrt{4}") == 1.0
        assert c.stats["worker_starts"] == 3
    finally:
        c.close()


# ---------------------------------------------------------------- format


FORMAT_TABLE = [
    # (prompt, completion, format, strict_format)
    ("Q", "<think>a</think><answer>b</answer>", 1.0, 0.0),
    ("Q", "<think>\na\n</think>\n<answer>\nb\n</answer>", 1.0, 1.0),
    ("Q", "<think>\na\n</think>\n<answer>\nb\n</answer>\n", 1.0, 1.0),
    ("Q", "<think>\n\n</think>\n<answer>\nb\n</answer>", 1.0, 0.0),       # empty reasoning
    ("Q", "<answer>b</answer>", 0.0, 0.0),
    ("Q", "<think>a</think><answer>b</answer> and more", 0.0, 0.0),
    ("Q", "<think>a</think> b <answer>c</answer>", 0.0, 0.0),
    ("Q", "<think>a</think><answer>b</answer><answer>c</answer>", 0.0, 0.0),
    ("Q", "<answer>b</answer><think>a</think>", 0.0, 0.0),
    ("Q", "<think>a<think>b</think><answer>c</answer>", 0.0, 0.0),
    ("Q", "<think>a</think><answer>b", 0.0, 0.0),                        # truncated
    ("Q", "a</think><answer>b</answer>", 0.0, 0.0),
    ("User: Q\nAssistant: <think>", "a</think><answer>b</answer>", 1.0, 0.0),   # prefilled <think>
    ("User: Q\nAssistant: <think>\n", "a\n</think>\n<answer>\nb\n</answer>", 1.0, 1.0),
    ([{"role": "user", "content": "Q"}], [{"role": "assistant", "content": "<think>a</think><answer>b</answer>"}],
     1.0, 0.0),
    ("Q", "<think>" + "</think>" * 20_000 + "<answer>x</answer>", 0.0, 0.0),
    ("Q", "<think>" + PROSE_100KB + "</think><answer>x</answer>", 1.0, 0.0),
]


@pytest.mark.parametrize("prompt, completion, fmt, strict", FORMAT_TABLE)
def test_format_table(prompt, completion, fmt, strict):
    assert get_verifier("format")([prompt], [completion]) == [fmt]
    assert get_verifier("strict_format")([prompt], [completion]) == [strict]


# ---------------------------------------------------------------- registry and weighting


def test_registry_rejects_duplicates_and_unknown_names():
    name = f"const_{uuid.uuid4().hex}"
    register_verifier(name)(lambda prompts, completions, **cols: [1.0] * len(completions))
    with pytest.raises(ValueError, match="already registered"):
        register_verifier(name)(lambda prompts, completions, **cols: [])
    with pytest.raises(ValueError, match="already registered"):
        register_verifier("acc")(lambda prompts, completions, **cols: [])
    with pytest.raises(KeyError, match="registered"):
        get_verifier("no_such_verifier")


@pytest.fixture(scope="module")
def rows():
    prompts = ["Q"] * 4
    completions = [tagged("\\boxed{18}"), tagged("\\boxed{17}"), "\\boxed{18}", tagged("\\boxed{18}")]
    labels = ["#### 18", "#### 18", "#### 18", None]
    return prompts, completions, labels


def test_compute_rewards_weights_and_none(rows):
    prompts, completions, labels = rows
    rewards, scores = compute_rewards(["acc", "format"], [0.5, 0.5], prompts, completions, labels=labels)
    assert scores == {"acc": [1.0, 0.0, 1.0, None], "format": [1.0, 1.0, 0.0, 1.0]}
    # the row without a label is scored by format alone; weights are not renormalised
    assert rewards == [1.0, 0.5, 0.5, 0.5]
    metrics = reward_metrics(scores, rewards)
    assert metrics["rewards/acc"] == pytest.approx(2 / 3)
    assert metrics["rewards/acc_na"] == 0.25
    assert metrics["rewards/total"] == 0.625


def test_compute_rewards_accuracy_gated_format(rows):
    prompts, completions, labels = rows
    rewards, _ = compute_rewards(["acc", "format"], [1.0, 0.5], prompts, completions, labels=labels, gate="acc")
    # right+formatted 1.5; wrong+formatted earns nothing; right unformatted 1.0; no label: ungated
    assert rewards == [1.5, 0.0, 1.0, 0.5]


def test_compute_rewards_validation(rows):
    prompts, completions, labels = rows
    with pytest.raises(ValueError, match="verifier_weight"):
        compute_rewards(["acc", "format"], [1.0], prompts, completions, labels=labels)
    with pytest.raises(ValueError, match="gate"):
        compute_rewards(["format"], None, prompts, completions, gate="acc")
    bad = f"bad_{uuid.uuid4().hex}"
    register_verifier(bad)(lambda prompts, completions, **cols: [float("nan")] * len(completions))
    with pytest.raises(ValueError, match="non-finite"):
        compute_rewards([bad], None, prompts, completions)
    short = f"short_{uuid.uuid4().hex}"
    register_verifier(short)(lambda prompts, completions, **cols: [1.0])
    with pytest.raises(ValueError, match="1 scores for 4"):
        compute_rewards([short], None, prompts, completions)
    none = f"none_{uuid.uuid4().hex}"
    register_verifier(none)(lambda prompts, completions, **cols: [None] * len(completions))
    assert compute_rewards([none], None, prompts, completions)[0] == [None] * 4


def test_rewards_package_imports_nothing_heavy():
    code = ("import sys, mindr1.rl.rewards; "
            "print(sorted(m for m in ('sympy', 'math_verify', 'torch', 'ray') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
