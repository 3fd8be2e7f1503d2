"""R1's readability filters: each drops its planted case and keeps real GSM8K solutions."""
import json

import pytest

from mindr1.sampling.filters import ReadabilityConfig, readability_failures

CLEAN_ROWS = 200


@pytest.fixture(scope="module")
def gsm8k_rows():
    from mindr1.artifacts import gsm8k_path

    with open(gsm8k_path("train")) as fh:
        return [json.loads(next(fh)) for _ in range(CLEAN_ROWS)]


def _r1(think: str, answer: str = "72") -> str:
    return f"<think>\n{think}\n</think>\n<answer>\n\\boxed{{{answer}}}\n</answer>"


PROMPT = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. " \
         "How many clips did Natalia sell altogether in April and May?"
PLANTED = {
    "mixed_language": _r1("Natalia sold 48 clips in April. 五月她卖了一半，也就是二十四个。所以总共是四十八加二十四等于七十二。"
                          "So the total is 72."),
    "long_paragraph": _r1("".join(f"On day {i} she sold {3 * i} clips. " for i in range(200))[:3000]),  # 3,000 chars
    "code_block": _r1("Let me compute it.\n```python\napril = 48\nmay = april // 2\nprint(april + may)\n```\n"
                      "It prints 72."),
    "tags": "<think>\n48 / 2 = 24\n</think>\n<think>\n48 + 24 = 72\n</think>\n<answer>\n72\n</answer>",
    "repetition": _r1("Natalia sold half as many clips in May as in April.\n\n" * 50),
}


@pytest.mark.parametrize("name", sorted(PLANTED))
def test_each_filter_drops_its_planted_case(name):
    failures = readability_failures(PLANTED[name], PROMPT, ReadabilityConfig())
    assert name in failures, failures
    # and only that filter's switch lets it through
    off = ReadabilityConfig(**({"tags": "off"} if name == "tags" else {name: False}))
    assert name not in readability_failures(PLANTED[name], PROMPT, off)


def test_planted_cases_fail_only_their_own_filter():
    for name, text in PLANTED.items():
        extra = set(readability_failures(text, PROMPT, ReadabilityConfig())) - {name}
        assert not extra, (name, extra)


def test_real_gsm8k_solutions_are_kept(gsm8k_rows):
    cfg = ReadabilityConfig(tags="if_present")
    for row in gsm8k_rows:
        assert readability_failures(row["answer"], row["question"], cfg) == {}, row["answer"]
        assert readability_failures(_r1(row["answer"]), row["question"], ReadabilityConfig(tags="required")) == {}


def test_thresholds_and_details():
    mixed = PLANTED["mixed_language"]
    assert "mixed_language" not in readability_failures(mixed, PROMPT, ReadabilityConfig(max_foreign_share=0.9))
    # a Chinese prompt answered in Chinese is one language; Greek letters are maths, not a language
    zh = "<think>\n五月卖了四十八的一半，也就是二十四个，总共七十二个。\n</think>\n<answer>\n72\n</answer>"
    assert readability_failures(zh, "娜塔莉亚四月卖了48个夹子，五月卖了一半。她一共卖了多少个？", ReadabilityConfig()) == {}
    assert readability_failures("The area is \u03c0 r^2 = 3\u03c0, and \u03b1 = \u03b2.", "Find the area.",
                                ReadabilityConfig()) == {}
    assert "long_paragraph" not in readability_failures(PLANTED["long_paragraph"], PROMPT,
                                                        ReadabilityConfig(max_paragraph_chars=5000))
    # code is fine when the task asks for code
    assert readability_failures(PLANTED["code_block"], "Write a Python function for the clips.", ReadabilityConfig()) == {}
    # tags: a missing </answer> is unpaired; 'required' wants all four; a prefilled <think> counts
    assert "tags" in readability_failures("<think>x</think><answer>72", PROMPT, ReadabilityConfig())
    assert "tags" in readability_failures("The answer is 72.", PROMPT, ReadabilityConfig(tags="required"))
    assert readability_failures("x\n</think>\n<answer>72</answer>", PROMPT, ReadabilityConfig(tags="required"),
                                prompt_text="<|im_start|>assistant\n<think>") == {}
    with pytest.raises(ValueError, match="--max-foreign-share must be in"):
        ReadabilityConfig(max_foreign_share=2.0)
    with pytest.raises(ValueError, match="--tags must be one of"):
        ReadabilityConfig(tags="sometimes")
