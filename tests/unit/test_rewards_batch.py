"""Verifier batches: hostile items checked in parallel under one deadline, completions that are not text
scored 0 with a counted reason, a pre-check that keeps meaningful case and spaces, and one finaliser
per checker however often its workers restart."""
import os
import signal
import time
import weakref

import pytest

from mindr1.rl.rewards import compute_rewards
from mindr1.rl.rewards.math_checker import MathChecker
from mindr1.rl.rewards.verifiers import same_form, score_answer, score_answers

TIMEOUT_S, GRACE_S = 1.0, 0.5
ITEM_LIMIT_S = TIMEOUT_S + GRACE_S  # the most one item may cost: its limit, then the kill
HOSTILE = "9^{9^{9^{9}}}"  # math-verify runs until its timer stops it


def tagged(answer):
    return f"<think>\nwork\n</think>\n<answer>\n{answer}\n</answer>"


@pytest.fixture(scope="module")
def checker():
    c = MathChecker(timeout_s=TIMEOUT_S, grace_s=GRACE_S, workers=2)
    c.check_batch([("1", "\\frac{2}{2}"), ("2", "\\sqrt{4}")])  # both workers started and warm
    yield c
    c.close()


def test_hostile_batch_is_scored_within_two_item_limits(checker):
    completions = [tagged("\\boxed{" + HOSTILE + "}")] * 60 + [tagged("\\boxed{0.5}")] * 4
    labels = ["1"] * 60 + ["\\frac{1}{2}"] * 4
    start = time.monotonic()
    scores = score_answers(completions, labels, checker)
    elapsed = time.monotonic() - start
    assert elapsed < 2 * ITEM_LIMIT_S, elapsed
    assert scores == [0.0] * 60 + [1.0] * 4  # short, honest answers go first and are not starved
    assert len(checker.worker_pids) == 2 and checker.check("2", "\\sqrt{4}") == 1.0  # workers replaced


def test_large_honest_batch_is_decided_in_full():
    # Far more honest work than one item's limit: GRPO scores a whole step's completions in one batch
    # (2,048 at the 7B recipe's size), and none of it may be lost to the hostile-batch deadline. With a
    # 0.2 s limit (+ 0.1 s grace) 2,000 items (a few ms each) cannot fit in one fixed deadline on 2 workers.
    c = MathChecker(timeout_s=0.2, grace_s=0.1, workers=2)
    try:
        c.check_batch([("1", "1"), ("2", "2")])  # both workers started and warm
        pairs = [(str(i), f"\\frac{{{2 * i}}}{{2}}") for i in range(2000)] + [("1", "2")] * 10
        scores = c.check_batch(pairs)
        assert scores == [1.0] * 2000 + [0.0] * 10, c.stats
        assert "batch_deadline" not in c.stats, c.stats
    finally:
        c.close()


def test_none_and_non_string_completions_score_zero_and_are_counted():
    completions = [tagged("\\boxed{18}"), None, 42, [{"role": "assistant", "content": None}], tagged("\\boxed{18}")]
    counts = {}
    rewards, scores = compute_rewards(["acc", "format"], [0.5, 0.5], ["Q"] * 5, completions,
                                      labels=["18", "18", "18", "18", None], counts=counts)
    assert rewards == [1.0, 0.0, 0.0, 0.0, 0.5]
    assert scores["acc"] == [1.0, 0.0, 0.0, 0.0, None]
    assert counts == {"invalid_completion/none": 1, "invalid_completion/not_text:int": 1,
                      "invalid_completion/not_text:list": 1}


def test_reward_worker_batch_survives_a_none_completion():
    from mindr1.rl.workers.reward import RewardWorker

    worker = object.__new__(RewardWorker)  # the scoring method only; no Ray actor needed
    worker.names, worker.weights, worker.gate = ["acc", "format"], [1.0, 0.5], "acc"
    out = worker.score(["Q", "Q"], [tagged("\\boxed{7}"), None], ["7", "7"])
    assert out["rewards"] == [1.5, 0.0] and out["invalid"] == {"invalid_completion/none": 1}


@pytest.mark.parametrize("pred, gold, same", [
    ("\\Alpha", "\\alpha", False), ("1 2", "12", False), ("\\alpha x", "\\alphax", False), ("X", "x", False),
    ("Yes", "yes", True), ("x + 1", "x+1", True), ("\\frac {1} {2}", "\\frac{1}{2}", True), ("$5$.", "5", True),
    ("\\text{ North America }", "north america", True),
])
def test_precheck_keeps_case_and_spaces_that_carry_meaning(pred, gold, same):
    assert same_form(pred, gold) is same


@pytest.mark.parametrize("pred, gold", [("\\Alpha", "\\alpha"), ("1 2", "12"), ("\\beta", "\\Beta")])
def test_meaningful_differences_score_zero(checker, pred, gold):
    assert score_answer(tagged("\\boxed{" + pred + "}"), gold, checker) == 0.0


def _finalisers_of(obj) -> int:
    return sum(1 for f in list(weakref.finalize._registry) if (f.peek() or (None,))[0] is obj)


def test_worker_restarts_add_no_finalisers():
    c = MathChecker(timeout_s=TIMEOUT_S, grace_s=GRACE_S)
    try:
        for _ in range(3):
            assert c.check("2", "\\sqrt{4}") == 1.0
            os.kill(c.worker_pid, signal.SIGKILL)
            c._slots[0].proc.wait(timeout=30)  # reaped before the next check (a fixed sleep raced on a loaded machine)
        assert c.check("2", "\\sqrt{4}") == 1.0
        assert c.stats["worker_starts"] == 4 and _finalisers_of(c) == 1
    finally:
        c.close()
