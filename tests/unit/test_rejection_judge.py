"""GenRM judge: verdict and score parsing on real judge outputs (SmolLM2-135M-Instruct judging
GSM8K answers with configs/rejection_sampling/judge_equivalence.txt), garbage and truncated ones;
the template's one-pass filling; batches by length that keep a problem's answers together."""
import pytest

from mindr1.sampling.judge import (JudgeError, JudgeRequest, JudgeTemplate, length_batches, parse_score,
                                   parse_verdict)

VERDICTS = [
    # real SmolLM2 judgements
    ("Verdict: DIFFERENT\n\nNatalia sold clips to 48 * 2 = 96 clips in May.\nNatalia sold 48 + 96 = 192 clips across",
     "DIFFERENT"),
    ("Verdict: DIFFERENT\n\nNatalia sold 30 clips across all clips.\n#### 30\n\nVerdict: AMBIGUOUS\n\nVerdict: DIFFERENT",
     "DIFFERENT"),
    ("Verdict: DIFFERENT\n\nVerdict: EQUIVELY\n\nVerdict: DIFFERENT\n\nVerdict: EQUIVELY\n\nVerdict: DIFFERENT\n\nVer",
     "DIFFERENT"),
    ("The answer to the question \"What is the difference between 12/60 and 12/60?\" is 12/60, which is equal to 0.2.",
     "unparsable"),
    ("The answer to the problem is: 15C + 3C", "unparsable"),
    ("To solve this problem, we need to find the total steps needed to make the budget and make the wallet, which "
     "is 50 - 50 = 0.\n\nWe can start by finding the total steps needed to make", "unparsable"),
    # the shapes larger judges write (Open R1's Llama-3.3-70B prompt)
    ("Both solutions reach 72 clips; the reference writes it after ####, the model in \\boxed{72}.\n\n"
     "Verdict: EQUIVALENT", "EQUIVALENT"),
    ("The reference gives 1/2 and the model 0.5, the same number.\n**Verdict:** Equivalent", "EQUIVALENT"),
    ("The model answers 18, the reference 20.\nVerdict: [DIFFERENT]", "DIFFERENT"),
    ("The answers do not match.\nVerdict: NOT EQUIVALENT", "DIFFERENT"),
    ("The model's final answer is gibberish.\nverdict - ambiguous", "AMBIGUOUS"),
    # garbage and truncated
    ("", "unparsable"),
    ("\x00\x01 ]]]] {{{{ " * 50, "unparsable"),
    ("The reference answer is 72 and the model's answer is also 72, so the Verd", "unparsable"),  # cut off
    ("Verdict:", "unparsable"),
    ("EQUIVALENT", "unparsable"),  # a bare word is not a verdict line
]


@pytest.mark.parametrize("text,expected", VERDICTS)
def test_parse_verdict(text, expected):
    assert parse_verdict(text) == expected


@pytest.mark.parametrize("text,expected", [
    ("Clear and correct.\nScore: 8", 8.0),
    ("Score: 7/10", 7.0),
    ("**Score:** 3", 3.0),
    ("<score>9</score>", 9.0),                    # MindSpeed's GenRM format
    ("Score: 4\n...on reflection, Score: 6", 6.0),  # the last one counts
    ("Score: 11", None),                          # out of 1-10
    ("Score: 0", None),
    ("It is a fine answer, I would give it a", None),  # truncated
    ("", None),
])
def test_parse_score(text, expected):
    assert parse_score(text) == expected


def test_template_fill_is_one_pass_and_checks_placeholders(tmp_path):
    tpl = JudgeTemplate.load("verdict")
    text = tpl.fill("What is {response}?", "I say {reference} \\boxed{5}", "#### 5")
    assert "What is {response}?" in text and "I say {reference} \\boxed{5}" in text and "#### 5" in text
    assert text.index("What is") < text.index("#### 5") < text.index("I say")  # shared prefix first
    bad = tmp_path / "judge.txt"
    bad.write_text("Problem: {problem}\nAnswer: {response}\n")
    with pytest.raises(JudgeError, match=r"judge.txt: missing placeholder\(s\) \{reference\}"):
        JudgeTemplate.load("verdict", str(bad))
    assert JudgeTemplate.load("score", str(bad)).fill("p", "r") == "Problem: p\nAnswer: r\n"
    with pytest.raises(JudgeError, match="no such file"):
        JudgeTemplate.load("score", str(tmp_path / "none.txt"))


def test_length_batches_keep_a_problem_together_and_sort_by_length():
    groups = [0, 0, 0, 1, 1, 1, 2, 2, 2]
    lengths = [50, 60, 55, 10, 12, 11, 30, 30, 31]
    reqs = [JudgeRequest((g, i), g, "") for i, g in enumerate(groups)]
    batches = length_batches(reqs, lengths, batch_size=4)
    assert batches == [[3, 4, 5], [6, 7, 8], [0, 1, 2]]
    assert sorted(i for b in length_batches(reqs, lengths, 100) for i in b) == list(range(9))
