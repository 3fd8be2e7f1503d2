"""The built-in rule verifiers: `acc`, `format`, `strict_format`.

Format follows the R1 template: `<think> reasoning </think><answer> answer </answer>`.
When the prompt itself ends with `<think>` (a prefilled template, which ANCHORS.md found was
needed for small models to produce the tags at all), the completion is scored as if it
started with the prompt's `<think>` tail.
"""
from __future__ import annotations

from typing import Callable, Sequence

from .answers import (ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN, extract_final_answer,
                      normalize_ground_truth, parse_integer)
from .math_checker import MathChecker, default_checker
from .registry import message_text, register_verifier

MAX_ANSWER_CHARS = 1000
_TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)


def same_form(pred: str, gold: str) -> bool:
    """The cheap textual pre-check: equal after removing only what cannot change the meaning.

    Dropped: surrounding `$`, a wrapping `\\text{}`, a trailing period, and whitespace next to a
    non-alphanumeric character (`x + 1` = `x+1`). Kept: whitespace between two alphanumerics
    (`1 2` != `12`, `\\alpha x` != `\\alphax`) and case (`\\Alpha` != `\\alpha`, `X` != `x`), except that
    answers made only of letters and spaces (`Yes`, `North America`) compare case-blind.
    """
    return _form(pred) == _form(gold)


def _form(answer: str) -> str:
    text = answer.strip().rstrip(".").strip()
    while len(text) >= 2 and text[0] == "$" and text[-1] == "$":
        text = text[1:-1].strip()
    if text.startswith("\\text{") and text.endswith("}"):
        text = text[len("\\text{"):-1].strip()
    text = text.rstrip(".").strip()
    words = text.split()
    out = words[0] if words else ""
    for word in words[1:]:  # one pass: no regular expression over model output
        out += (" " if out[-1].isalnum() and word[0].isalnum() else "") + word
    if len(out) > 1 and out.replace(" ", "").isalpha():
        out = out.lower()
    return out


def _cheap_score(pred: str, gold: str) -> float | None:
    """1.0 / 0.0 when the text or integer pre-check decides; None when math-verify must."""
    if same_form(pred, gold):
        return 1.0
    if any(ch.isspace() for ch in pred.strip()) or any(ch.isspace() for ch in gold.strip()):
        return None  # `1 2` is not the integer 12; math-verify decides
    gold_int, pred_int = parse_integer(gold), parse_integer(pred)
    if gold_int is not None and pred_int is not None:
        return float(gold_int == pred_int)
    return None


def _prepared(completion: str, label: object, require_answer_tag: bool, max_answer_chars: int,
              extract: Callable[[str], str | None] | None = None):
    """(gold, pred, decided score or None) for one item; gold None = no ground truth."""
    gold = normalize_ground_truth(label)
    if gold is None:
        return None, None, None
    pred = extract(completion) if extract is not None else extract_final_answer(completion, require_answer_tag)
    if pred is None or len(pred) > max_answer_chars:
        return gold, pred, 0.0
    return gold, pred, _cheap_score(pred, gold)


def score_answer(completion: str, label: object, checker: MathChecker | None = None,
                 require_answer_tag: bool = False, max_answer_chars: int = MAX_ANSWER_CHARS,
                 extract: Callable[[str], str | None] | None = None) -> float | None:
    """1.0 / 0.0 for one completion against one ground truth; None when there is no ground truth.

    Cheap exact checks (same text, same integer: :func:`same_form`) run here; anything else goes to
    math-verify through the time-limited `checker`. An answer longer than `max_answer_chars` is wrong
    without parsing: no real final answer is that long, and sympy on it is a denial of service.
    `extract` replaces the default reading of the completion (`extract_final_answer`), e.g.
    `answers.extract_any_answer` for free-form solutions.
    """
    return judge_answer(completion, label, checker, require_answer_tag, max_answer_chars, extract)[0]


def score_answers(completions: Sequence[str], labels: Sequence, checker: MathChecker | None = None,
                  require_answer_tag: bool = False, max_answer_chars: int = MAX_ANSWER_CHARS,
                  extract: Callable[[str], str | None] | None = None) -> list[float | None]:
    """:func:`score_answer` over a batch: the items math-verify must decide go to the checker as one
    batch, checked in parallel on its workers under one deadline."""
    return [score for score, _, _ in judge_answers(completions, labels, checker, require_answer_tag,
                                                        max_answer_chars, extract)]


def judge_answer(completion: str, label: object, checker: MathChecker | None = None,
                 require_answer_tag: bool = False,
                 max_answer_chars: int = MAX_ANSWER_CHARS,
                 extract: Callable[[str], str | None] | None = None) -> tuple[float | None, str | None, str]:
    """`(score, extracted answer, status)` of :func:`score_answer`; status is 'exact' (the cheap
    pre-checks decided), 'no_label', 'no_answer', 'too_long' or math-verify's ('ok', 'timeout',
    'killed: ...', 'batch_deadline', ...)."""
    return judge_answers([completion], [label], checker, require_answer_tag, max_answer_chars, extract)[0]


def judge_answers(completions: Sequence[str], labels: Sequence, checker: MathChecker | None = None,
                  require_answer_tag: bool = False,
                  max_answer_chars: int = MAX_ANSWER_CHARS,
                  extract: Callable[[str], str | None] | None = None) -> list[tuple[float | None, str | None, str]]:
    """:func:`judge_answer` over a batch (math-verify items checked in parallel under one deadline)."""
    out: list[tuple[float | None, str | None, str]] = []
    pending: list[tuple[int, str, str]] = []
    for i, (completion, label) in enumerate(zip(completions, labels)):
        gold, pred, decided = _prepared(completion, label, require_answer_tag, max_answer_chars, extract)
        if gold is None:
            out.append((None, None, "no_label"))
        elif pred is None:
            out.append((0.0, None, "no_answer"))
        elif len(pred) > max_answer_chars:
            out.append((0.0, pred, "too_long"))
        elif decided is not None:
            out.append((decided, pred, "exact"))
        else:
            out.append((None, pred, ""))
            pending.append((i, gold, pred))
    if pending:
        results = (checker or default_checker()).check_batch_status([(gold, pred) for _, gold, pred in pending])
        for (i, _, pred), (score, status) in zip(pending, results):
            out[i] = (score, pred, status)
    return out


def _columns_labels(columns: dict, n: int) -> list:
    if "labels" not in columns:
        raise ValueError("the acc verifier needs a 'labels' column (the ground truths); "
                         f"got columns {sorted(columns)}")
    labels = list(columns["labels"])
    if len(labels) != n:
        raise ValueError(f"acc got {len(labels)} labels for {n} completions")
    return labels


@register_verifier("acc")
def accuracy_reward(prompts: Sequence, completions: Sequence, **columns) -> list[float | None]:
    """Final answer (last `\\boxed{}` in `<answer>`, else the tag's text, else the last
    `\\boxed{}` anywhere) equivalent to `labels[i]` by math-verify: 1.0 or 0.0; None without a label."""
    labels = _columns_labels(columns, len(completions))
    return score_answers([message_text(c) for c in completions], labels)


def _with_prefill(prompt: object, completion: object) -> str:
    text = message_text(completion)
    if prompt is None:
        return text
    prompt_text = message_text(prompt)
    tail_at = prompt_text.rfind(THINK_OPEN)
    if tail_at >= 0 and not prompt_text[tail_at:].strip().replace(THINK_OPEN, "", 1):
        return prompt_text[tail_at:] + text
    return text


def think_answer_parts(text: str) -> tuple[str, str] | None:
    """(think, answer) contents if `text` is exactly `<think>..</think><answer>..</answer>`
    (whitespace allowed around and between the blocks, each tag exactly once); else None."""
    body = text.strip()
    if not (body.startswith(THINK_OPEN) and body.endswith(ANSWER_CLOSE)):
        return None
    if any(body.count(tag) != 1 for tag in _TAGS):
        return None
    think_end, answer_start = body.find(THINK_CLOSE), body.find(ANSWER_OPEN)
    if not think_end < answer_start or body[think_end + len(THINK_CLOSE):answer_start].strip():
        return None
    return body[len(THINK_OPEN):think_end], body[answer_start + len(ANSWER_OPEN):-len(ANSWER_CLOSE)]


def _strict_ok(text: str) -> bool:
    parts = think_answer_parts(text)
    if parts is None or not parts[0].strip() or not parts[1].strip():
        return False
    body = text.rstrip()
    return (body.startswith(THINK_OPEN + "\n") and body.endswith("\n" + ANSWER_CLOSE)
            and f"\n{THINK_CLOSE}\n{ANSWER_OPEN}\n" in body)


def _prompt_list(prompts: Sequence | None, n: int) -> list:
    return [None] * n if prompts is None else list(prompts)


@register_verifier("format")
def format_reward(prompts: Sequence, completions: Sequence, **columns) -> list[float]:
    """1.0 if the completion is `<think>..</think><answer>..</answer>` and nothing else."""
    return [float(think_answer_parts(_with_prefill(p, c)) is not None)
            for p, c in zip(_prompt_list(prompts, len(completions)), completions)]


@register_verifier("strict_format")
def strict_format_reward(prompts: Sequence, completions: Sequence, **columns) -> list[float]:
    """1.0 only for the exact layout `<think>\\n..\\n</think>\\n<answer>\\n..\\n</answer>` with
    non-empty reasoning and answer."""
    return [float(_strict_ok(_with_prefill(p, c)))
            for p, c in zip(_prompt_list(prompts, len(completions)), completions)]
