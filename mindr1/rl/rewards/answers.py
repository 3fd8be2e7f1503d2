"""Pull final answers out of model completions and ground truths (pure string code).

Every scan here is a single left-to-right pass or a `str.find`/`rfind`: a completion is model
output of unbounded size and shape (100 kB of text, 10,000 nested braces), so no regular
expression with backtracking ever runs over it.
"""
from __future__ import annotations

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"
_BOXED_COMMANDS = ("\\boxed", "\\fbox")


def answer_tag_content(text: str) -> str | None:
    """Content of the last `<answer>...</answer>` block, or None when there is no closed one."""
    start = text.rfind(ANSWER_OPEN)
    if start < 0:
        return None
    start += len(ANSWER_OPEN)
    end = text.find(ANSWER_CLOSE, start)
    return None if end < 0 else text[start:end]


def last_boxed_content(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`), braces matched; None if absent or unclosed."""
    pos = max(text.rfind(cmd) for cmd in _BOXED_COMMANDS)
    if pos < 0:
        return None
    cmd = next(c for c in _BOXED_COMMANDS if text.startswith(c, pos))
    i = pos + len(cmd)
    while i < len(text) and text[i] == " ":
        i += 1
    if i >= len(text) or text[i] != "{":
        return None
    depth, start = 0, i + 1
    for j in range(i, len(text)):
        ch = text[j]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start:j]
    return None


def extract_final_answer(completion: str, require_answer_tag: bool = False) -> str | None:
    """The answer a completion commits to.

    Inside `<answer>`: the last `\\boxed{}` there, else the whole tag content (reasoning-gym
    style `<answer>42</answer>`). Without an answer tag: the last `\\boxed{}` anywhere, else the
    number after a GSM8K-style final `#### ` line, unless `require_answer_tag`. None when nothing
    qualifies (the completion scores as wrong).
    """
    tagged = answer_tag_content(completion)
    if tagged is not None:
        boxed = last_boxed_content(tagged)
        answer = boxed if boxed is not None else tagged
    elif require_answer_tag:
        return None
    else:
        answer = last_boxed_content(completion)
        if answer is None:
            answer = extract_gsm8k_answer(completion)
    if answer is None:
        return None
    answer = answer.strip()
    return answer or None


def extract_gsm8k_answer(text: str) -> str | None:
    """The number after GSM8K's final `#### ` marker (its line only): '... #### 1,234' -> '1234'; None without one."""
    marker = text.rfind("####")
    if marker < 0:
        return None
    rest = text[marker + 4:].strip()
    value = rest.split("\n", 1)[0].strip().replace(",", "").replace("$", "").rstrip(".").strip()
    return value or None


def _strip_dollars(text: str) -> str:
    while len(text) >= 2 and text.startswith("$") and text.endswith("$"):
        text = text[1:-1].strip()
    return text


def normalize_ground_truth(label: object) -> str | None:
    """A `labels` entry as a bare expression: GSM8K '#### 18' -> '18', '$\\boxed{x}$' -> 'x'.

    None (not applicable) for a missing or empty label.
    """
    if label is None:
        return None
    text = str(label).strip()
    if "####" in text:
        return extract_gsm8k_answer(text)
    boxed = last_boxed_content(text)
    if boxed is not None:
        text = boxed
    text = _strip_dollars(text.strip())
    return text or None


def canonical_text(answer: str) -> str:
    """Loose textual form for a cheap exact-match check: no whitespace or `$`, no surrounding
    `\\text{}` or trailing period, lower case."""
    text = _strip_dollars(answer.strip())
    if text.startswith("\\text{") and text.endswith("}"):
        text = text[len("\\text{"):-1]
    text = "".join(ch for ch in text if not ch.isspace() and ch != "$")
    return text.rstrip(".").lower()


def parse_integer(answer: str) -> int | None:
    """An answer that is a plain integer of <= 60 digits, optionally signed and grouped by
    thousands ('1,234,567'); None for anything else."""
    text = canonical_text(answer)
    sign, digits = (text[0], text[1:]) if text[:1] in "+-" else ("", text)
    groups = digits.split(",")
    if len(groups) > 1 and (not 1 <= len(groups[0]) <= 3 or any(len(g) != 3 for g in groups[1:])):
        return None
    digits = "".join(groups)
    if not digits or len(digits) > 60 or not digits.isascii() or not digits.isdigit():
        return None
    return int(sign + digits)


_ANSWER_PHRASES = ("the answer is", "final answer is", "final answer:", "answer:")


def _number_at(text: str, i: int) -> str | None:
    """The number starting at text[i] (optional sign, digits with thousands commas, decimals)."""
    j = i + 1 if i < len(text) and text[i] in "+-" else i
    start_digits = j
    while j < len(text) and (text[j].isdigit() or (text[j] in ",." and j + 1 < len(text) and text[j + 1].isdigit())):
        j += 1
    if j == start_digits or not text[start_digits].isdigit():
        return None
    return text[i:j]


def extract_answer_phrase(text: str) -> str | None:
    """The number right after the last 'the answer is' / 'answer:' (case-insensitive), skipping
    '$', '*' and spaces: 'So the final answer is: **$1,234**.' -> '1,234'; None without one."""
    lower = text.lower()
    best = -1
    for phrase in _ANSWER_PHRASES:
        pos = lower.rfind(phrase)
        if pos >= 0:
            best = max(best, pos + len(phrase))
    if best < 0:
        return None
    i = best
    while i < len(text) and i < best + 16 and text[i] in " \t\n:*$\\(=":
        i += 1
    return _number_at(text, i)


def last_number(text: str) -> str | None:
    """The last number in the text ('... so 5 + 3 = 8 apples.' -> '8'); None if there is none."""
    i = len(text) - 1
    while i >= 0 and not text[i].isdigit():
        i -= 1
    if i < 0:
        return None
    end = i + 1
    while i > 0 and (text[i - 1].isdigit() or (text[i - 1] in ",." and i > 1 and text[i - 2].isdigit())):
        i -= 1
    if i > 0 and text[i - 1] == "-" and (i == 1 or not text[i - 2].isalnum()):
        i -= 1
    return text[i:end]


def extract_any_answer(completion: str) -> str | None:
    """A lenient reading for free-form solutions (GSM8K-style chat answers without tags):
    `<answer>` / `\\boxed{}` first (`extract_final_answer`), then a GSM8K `####` marker, then
    'the answer is N', then the last number of the text."""
    for extract in (extract_final_answer, extract_gsm8k_answer, extract_answer_phrase, last_number):
        answer = extract(completion)
        if answer is not None and answer.strip():
            return answer.strip()
    return None
