"""The generative reward model (GenRM) of rejection sampling: a judge LLM served by a rollout engine.

Two modes, each a prompt template under ``configs/rejection_sampling/`` (replace it with
``--judge-template FILE``; placeholders ``{problem}``, ``{reference}``, ``{response}``; a line
``<<<REPLY>>>`` ends the user turn, and the text after it starts the judge's reply, e.g.
``Verdict:`` so that a small judge answers first and briefly: ``judge_equivalence_short.txt``):

- with a ground truth (``--use-ground-truth-answer``): a math answer validator (the judge Open R1
  ran with Llama-3.3-70B to recover answers math-verify rejected for their format). It compares
  only the final answers and ends with ``Verdict: EQUIVALENT | DIFFERENT | AMBIGUOUS``;
- without one: a 1-10 quality score, ``Score: N`` (MindSpeed's ``<score>N</score>`` is read too).

A judgement that does not parse (garbage, cut off by ``--max-new-tokens``) is counted as
``unparsable`` and treated as a reject, never an error. The problem and reference come before
the response in the template, so the N judge prompts of one problem share their prefix and a
prefix-caching engine (vLLM ``--enable-prefix-caching``) computes it once; requests are sent in
batches of similar length, each problem's N answers kept together.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "rejection_sampling"
TEMPLATES = {"verdict": CONFIGS / "judge_equivalence.txt", "score": CONFIGS / "judge_quality.txt"}
PLACEHOLDERS = {"verdict": ("problem", "reference", "response"), "score": ("problem", "response")}
VERDICTS = ("EQUIVALENT", "DIFFERENT", "AMBIGUOUS")
UNPARSABLE = "unparsable"
REPLY_MARKER = "<<<REPLY>>>"
_FIELD = re.compile(r"\{(problem|reference|response)\}")
# 'Verdict: EQUIVALENT', '**Verdict:** Not Equivalent', 'verdict - [DIFFERENT]'
_VERDICT = re.compile(r"verdict[\s*:#\-=\[\]`\"']{0,12}(not[\s_-]{1,3}equivalent|equivalent|different|ambiguous)",
                      re.IGNORECASE)
_SCORE = re.compile(r"(?:score[\s*:#\-=\[\]`\"']{0,12}|<score>\s{0,3})(-?\d{1,3}(?:\.\d{1,3})?)(?:\s{0,3}/\s{0,3}10)?",
                    re.IGNORECASE)


class JudgeError(ValueError):
    """A judge template or setting that cannot work; the message names the file or flag."""


@dataclass
class JudgeTemplate:
    mode: str          # "verdict" (with a ground truth) or "score"
    text: str
    path: str
    reply_prefix: str = ""   # the start of the judge's reply (after a <<<REPLY>>> line)

    @classmethod
    def load(cls, mode: str, path: Optional[str] = None) -> "JudgeTemplate":
        file = Path(path) if path else TEMPLATES[mode]
        if not file.is_file():
            raise JudgeError(f"--judge-template {file}: no such file")
        text = file.read_text()
        missing = [f"{{{name}}}" for name in PLACEHOLDERS[mode] if f"{{{name}}}" not in text]
        if missing:
            raise JudgeError(f"--judge-template {file}: missing placeholder(s) {', '.join(missing)} "
                             f"(a {mode} judge needs {', '.join('{' + n + '}' for n in PLACEHOLDERS[mode])})")
        text, marker, reply = text.partition(REPLY_MARKER)
        return cls(mode, text.rstrip("\n") + "\n" if marker else text, str(file), reply.strip() if marker else "")

    def fill(self, problem: str, response: str, reference: str = "") -> str:
        """One pass over the template: text inside the values is never substituted again."""
        values = {"problem": problem, "reference": reference, "response": response}
        return _FIELD.sub(lambda m: values[m.group(1)], self.text)


def parse_verdict(judgement: str) -> str:
    """The last ``Verdict: X`` of a judgement: EQUIVALENT, DIFFERENT, AMBIGUOUS, or ``unparsable``."""
    matches = _VERDICT.findall(judgement or "")
    if not matches:
        return UNPARSABLE
    word = matches[-1].upper()
    return "DIFFERENT" if word.startswith("NOT") else word


def parse_score(judgement: str, low: float = 1.0, high: float = 10.0) -> Optional[float]:
    """The last ``Score: N`` (or ``<score>N</score>``, ``N/10``) in [low, high]; None otherwise."""
    matches = _SCORE.findall(judgement or "")
    if not matches:
        return None
    value = float(matches[-1])
    return value if low <= value <= high else None


@dataclass
class JudgeRequest:
    key: tuple            # (row, response) position, returned with the result
    group: int            # problem index: requests of one problem stay together
    text: str             # the filled template (before the judge's chat template)


def length_batches(requests: Sequence[JudgeRequest], lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices of ``requests`` in batches of similar length, each problem's requests contiguous.

    Problems are ordered by their longest request and cut into batches of about ``batch_size``
    requests (a problem is never split), so padding (HF) is small and a prefix cache sees the
    N answers of a problem together.
    """
    by_group: dict[int, list[int]] = {}
    for i, req in enumerate(requests):
        by_group.setdefault(req.group, []).append(i)
    order = sorted(by_group.values(), key=lambda idx: (max(lengths[i] for i in idx), idx[0]))
    batches, current = [], []
    for idx in order:
        if current and len(current) + len(idx) > batch_size:
            batches.append(current)
            current = []
        current.extend(idx)
    if current:
        batches.append(current)
    return batches


class Judge:
    """Renders judge prompts with the judge's own chat template and generates judgements."""

    def __init__(self, engine, tokenizer, template: JudgeTemplate, params, prompt_max_len: int,
                 batch_size: int = 64, prompt_type: Optional[str] = None):
        from mindr1.sampling.prompts import PromptSource

        self.engine, self.tokenizer, self.template, self.params = engine, tokenizer, template, params
        self.batch_size = batch_size
        has_chat = getattr(tokenizer, "chat_template", None) is not None
        self.renderer = PromptSource(tokenizer, {"prompt": "prompt"}, has_chat and not prompt_type, prompt_type,
                                     prompt_max_len)
        self.prompt_max_len = prompt_max_len
        self.truncated_prompts = 0

    def _ids(self, text: str) -> list[int]:
        rendered = self.renderer.render([{"role": "user", "content": text}]) + self.template.reply_prefix
        ids = self.tokenizer(rendered, add_special_tokens=False)["input_ids"]
        if len(ids) > self.prompt_max_len:  # keep the start (instructions, problem) and the end (the turn)
            self.truncated_prompts += 1
            head = self.prompt_max_len // 2
            ids = ids[:head] + ids[len(ids) - (self.prompt_max_len - head):]
        return ids

    def judge(self, requests: Sequence[JudgeRequest], progress=None) -> list[str]:
        """The judgement text of each request, in request order."""
        ids = [self._ids(r.text) for r in requests]
        out: list[Optional[str]] = [None] * len(requests)
        stop = [t for t in [self.tokenizer.eos_token_id] if t is not None]
        for batch in length_batches(requests, [len(x) for x in ids], self.batch_size):
            self.params.stop_token_ids = stop
            groups = self.engine.generate([ids[i] for i in batch], self.params)
            for i, group in zip(batch, groups):
                out[i] = self.template.reply_prefix + self.tokenizer.decode(group[0].token_ids,
                                                                             skip_special_tokens=True)
            if progress is not None:
                progress.update(len(batch))
        return out  # type: ignore[return-value]
