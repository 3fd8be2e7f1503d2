"""``mindr1 rejection-sample`` (``python tools/rejection_sampling.py``): stage 3 of R1 with
MindSpeed-LLM's flags, in three tasks::

    # 1. best-of-N generation, one --iter slice per job (= `mindr1 generate`)
    mindr1 rejection-sample --task generate_vllm --pretrain POLICY --dataset prompts.jsonl \\
        --map-keys '{"prompt":"question","gt_answer":"answer","response":""}' --apply-chat-template \\
        --best-of-n 8 --rollout-batch-size 1000 --iter 0 --output-path gen_iter0.jsonl
    # 2. join the slices (refuses overlapping or missing ones, naming the files)
    mindr1 rejection-sample --task merge --dataset 'gen_iter*.jsonl' --output-path gen.jsonl
    # 3. filters: rules, readability, the GenRM judge; then the best response per prompt
    mindr1 rejection-sample --task rejection_sampling --pretrain JUDGE --dataset gen.jsonl \\
        --map-keys '{"prompt":"prompt","gt_answer":"gt_answer","response":"output"}' \\
        --use-ground-truth-answer --use-rules --output-path rs.jsonl

Stages of ``rejection_sampling``, each counted in ``OUTPUT_report.json`` (``OUTPUT`` without its
suffix, then ``_report.json``): ``truncated`` (a response cut by the token limit; off with
``--keep-truncated``), ``rules`` (``--use-rules``: the extracted final answer against
``gt_answer`` with the time-limited math-verify checker), R1's readability filters
(``mindr1.sampling.filters``), ``judge`` (the GenRM of ``mindr1.sampling.judge``, model
``--judge-model``, default ``--pretrain``; ``--no-judge`` skips it), then the selection: per prompt
the ``--keep-per-prompt`` best distinct responses, ties broken by the shortest.

``--judge-scope all`` judges every response that survived the other filters (MindSpeed's rules
then GenRM: both must accept); ``rule_rejected`` judges only the responses the rules rejected and
keeps those it accepts (Open R1's cheaper use: the judge recovers right answers written in a form
math-verify cannot read). With ``--use-ground-truth-answer`` the judge validates the final answer
against ``gt_answer`` (accepts EQUIVALENT); without it, it gives a 1-10 score and responses under
``--min-judge-score`` are dropped. The rules need only a ``gt_answer`` column in ``--map-keys``.

The input is a generate output (``response`` column = a list of N texts) or MindSpeed's flat
layout (one row per response, rows of one prompt joined by prompt and ground truth). Output rows
carry ``prompt``, ``output``, ``reward`` (MindSpeed's fields) and ``gt_answer``, ``scores``,
``filters_failed``; ``OUTPUT_scored.jsonl`` lists every response with its scores, judgement and
fate. Outputs are written under temporary names and renamed when complete; an empty result writes
the report, names the stage that removed everything, and exits non-zero without ``OUTPUT``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Optional

from mindr1.sampling import generate
from mindr1.sampling.filters import ReadabilityConfig, readability_failures
from mindr1.sampling.selection import (Candidate, PromptGroup, build_report, emptied_by, output_row, scored_row,
                                       select)

TASKS = ("generate_vllm", "rejection_sampling", "merge")
PROG = "mindr1 rejection-sample"


class RejectionError(ValueError):
    """Bad input or flags for the rejection pass; the message names the flag, key, file or line."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--task", required=True, choices=TASKS)
    generate.add_arguments(p, required=False)
    r = p.add_argument_group("rejection_sampling")
    r.add_argument("--use-ground-truth-answer", action="store_true",
                   help="judge as a math answer validator against the mapped gt_answer")
    r.add_argument("--use-rules", action="store_true", help="math-verify the final answer against gt_answer")
    r.add_argument("--rule-answer", choices=["any", "boxed"], default="any",
                   help="any: <answer>/\\boxed{}, then '####', 'the answer is N', the last number; boxed: only the first two")
    r.add_argument("--rule-timeout-s", type=float, default=5.0, help="math-verify time limit per response")
    r.add_argument("--judge-model", help="the GenRM's HF directory (default: --pretrain)")
    r.add_argument("--no-judge", action="store_true", help="rules and readability only")
    r.add_argument("--judge-template", help="judge prompt file (default: configs/rejection_sampling/judge_*.txt)")
    r.add_argument("--judge-scope", choices=["all", "rule_rejected"], default="all")
    r.add_argument("--judge-batch-size", type=int, default=64, help="judge prompts per engine call")
    r.add_argument("--min-judge-score", type=float, default=5.0, help="without a ground truth: lowest kept score")
    r.add_argument("--keep-per-prompt", type=int, default=1, help="K best distinct responses per prompt")
    r.add_argument("--keep-truncated", action="store_true", help="keep responses cut by the token limit")
    f = p.add_argument_group("readability filters (R1)")
    d = ReadabilityConfig()
    f.add_argument("--no-mixed-language-filter", action="store_true")
    f.add_argument("--max-foreign-share", type=float, default=d.max_foreign_share,
                   help="share of chain-of-thought letters outside the prompt's script")
    f.add_argument("--no-long-paragraph-filter", action="store_true")
    f.add_argument("--max-paragraph-chars", type=int, default=d.max_paragraph_chars)
    f.add_argument("--no-code-block-filter", action="store_true")
    f.add_argument("--tags", choices=["off", "if_present", "required"], default=d.tags,
                   help="<think>/<answer> tags: required, checked when present, or not checked")
    f.add_argument("--no-repetition-filter", action="store_true")
    f.add_argument("--repetition-ngram", type=int, default=d.repetition_ngram)
    f.add_argument("--max-repeated-ngram-share", type=float, default=d.max_repeated_ngram_share)
    f.add_argument("--repetition-min-ngrams", type=int, default=d.repetition_min_ngrams)
    return p


# ---------------------------------------------------------------------------------------- input

def rejection_keys(opts) -> dict:
    keys = generate._map_keys(opts.map_keys)
    keys = {"prompt": "prompt", "gt_answer": "gt_answer", "response": "output", **keys}
    if not keys.get("response"):
        raise RejectionError('--map-keys "response" names no column: rejection_sampling needs the responses '
                             '(a generate output holds them in "output")')
    for flag, used in (("--use-ground-truth-answer", opts.use_ground_truth_answer), ("--use-rules", opts.use_rules)):
        if used and not keys.get("gt_answer"):
            raise RejectionError(f'{flag} needs a "gt_answer" column in --map-keys, '
                                 f'got {json.dumps({k: v for k, v in keys.items() if k != "input"})}')
    return keys


def _str_list(row: dict, key: str, n: int) -> Optional[list]:
    value = row.get(key)
    return list(value) if isinstance(value, list) and len(value) == n else None


def group_rows(rows: list[dict], keys: dict, need_gt: bool) -> list[PromptGroup]:
    """Generate rows (a list of responses each) or flat rows (one response each) -> prompt groups."""
    groups: list[PromptGroup] = []
    flat: dict[str, PromptGroup] = {}
    rkey, pkey, gkey = keys["response"], keys["prompt"], keys.get("gt_answer") or None
    for i, row in enumerate(rows):
        where = row["_where"]
        columns = sorted(k for k in row if k != "_where")
        if rkey not in row:
            raise RejectionError(f"{where}: no response column {rkey!r} (--map-keys response); columns: {columns}")
        if pkey not in row:
            raise RejectionError(f"{where}: no prompt column {pkey!r} (--map-keys prompt); columns: {columns}")
        gt = row.get(gkey) if gkey else None
        if need_gt and (gt is None or not str(gt).strip()):
            raise RejectionError(f"{where}: no ground truth in column {gkey!r} (--map-keys gt_answer), "
                                 "which --use-ground-truth-answer and --use-rules need")
        value, prompt = row[rkey], row[pkey]
        input_text = row.get(keys.get("input", "input")) or (prompt if isinstance(prompt, str) else "")
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            n = len(value)
            groups.append(PromptGroup(int(row.get("index", i)), prompt, str(input_text), gt, where, list(value),
                                      _str_list(row, "finish_reasons", n), _str_list(row, "response_tokens", n)))
        elif isinstance(value, str):
            key = json.dumps([prompt, gt], sort_keys=True, default=str)
            if key not in flat:
                flat[key] = PromptGroup(len(flat), prompt, str(input_text), gt, where, [])
                groups.append(flat[key])
            flat[key].responses.append(value)
        else:
            raise RejectionError(f"{where}: column {rkey!r} must be a string or a list of strings, "
                                 f"got {type(value).__name__}")
    if flat and len(flat) != len(groups):
        raise RejectionError(f"{rows[0]['_where'].split(':')[0]}: mixes rows with one response and rows with a "
                             "list of responses")
    return groups


def problem_text(prompt) -> str:
    from mindr1.rl.rewards.registry import message_text

    return prompt if isinstance(prompt, str) else message_text(prompt)


# ---------------------------------------------------------------------------------------- stages

RULES_BATCH = 256  # responses per verifier batch (its progress step)


def stage_truncated(cands: list[Candidate]) -> int:
    checked = 0
    for c in cands:
        reasons = c.group.finish_reasons
        if reasons is not None:
            checked += 1
            if reasons[c.j] == "length":
                c.fail("truncated", "cut at --max-new-tokens")
    return checked


def stage_rules(cands: list[Candidate], opts, pending: bool) -> int:
    """math-verify of each live response; with ``pending`` a failure waits for the judge.

    Responses go to the checker's worker pool in batches of ``RULES_BATCH`` (checked in parallel,
    each under its own time limit), not one call after the other."""
    from mindr1.rl.rewards.answers import extract_any_answer
    from mindr1.rl.rewards.math_checker import MathChecker
    from mindr1.rl.rewards.verifiers import score_answers

    extract = extract_any_answer if opts.rule_answer == "any" else None
    checker = MathChecker(timeout_s=opts.rule_timeout_s)
    live = [c for c in cands if c.alive]
    bar = generate._progress(len(live), 0, opts.no_progress, "rules", "response")
    try:
        for start in range(0, len(live), RULES_BATCH):
            part = live[start:start + RULES_BATCH]
            scores = score_answers([c.text for c in part], [c.group.gt_answer for c in part], checker,
                                   extract=extract)
            for c, score in zip(part, scores):
                c.scores["rules"] = score
                if not score:
                    c.fail("rules", "final answer differs from gt_answer or was not found", drop=not pending)
            bar.update(len(part))
    finally:
        bar.close()
        checker.close()
    return len(live)


def stage_readability(cands: list[Candidate], cfg: ReadabilityConfig) -> int:
    live = [c for c in cands if c.alive]
    for c in live:
        for name, reason in readability_failures(c.text, problem_text(c.group.prompt), cfg,
                                                 c.group.input_text).items():
            c.fail(name, reason)
    return len(live)


def stage_judge(cands: list[Candidate], opts) -> dict:
    from transformers import AutoTokenizer

    from mindr1.rollout.base import SamplingParams
    from mindr1.sampling.judge import Judge, JudgeRequest, JudgeTemplate, parse_score, parse_verdict

    mode = "verdict" if opts.use_ground_truth_answer else "score"
    template = JudgeTemplate.load(mode, opts.judge_template)
    targets = [c for c in cands if c.alive and (opts.judge_scope == "all" or "rules" in c.failed)]
    info = {"model": str(opts.judge_model or opts.pretrain), "mode": mode, "scope": opts.judge_scope,
            "template": template.path, "judged": len(targets), "outcomes": {}, "recovered": 0}
    if targets:
        model_dir = Path(opts.judge_model or opts.pretrain)
        tokenizer = AutoTokenizer.from_pretrained(str(opts.tokenizer or model_dir))
        params = SamplingParams(n=1, temperature=0.0 if opts.temperature is None else opts.temperature,
                                top_p=opts.top_p, top_k=opts.top_k, max_tokens=opts.max_new_tokens,
                                repetition_penalty=opts.repetition_penalty, seed=opts.seed)
        requests = [JudgeRequest((c.group.index, c.j), c.group.index,
                                 template.fill(problem_text(c.group.prompt), c.text,
                                               "" if c.group.gt_answer is None else str(c.group.gt_answer)))
                    for c in targets]
        start = time.perf_counter()
        engine = generate.make_engine_for(opts, model_dir, opts.prompt_max_len + opts.max_new_tokens, PROG)
        try:
            judge = Judge(engine, tokenizer, template, params, opts.prompt_max_len, opts.judge_batch_size,
                          opts.prompt_type)
            bar = generate._progress(len(targets), 0, opts.no_progress, "judge", "response")
            texts = judge.judge(requests, bar)
            bar.close()
        finally:
            engine.close()
        info.update(engine=engine.kind, seconds=round(time.perf_counter() - start, 3),
                    prompt_truncated=judge.truncated_prompts)
        for c, text in zip(targets, texts):
            c.judgement = text
            outcome = _apply_judgement(c, text, mode, opts, parse_verdict, parse_score)
            info["outcomes"][outcome] = info["outcomes"].get(outcome, 0) + 1
            info["recovered"] += c.recovered
    return info


def _apply_judgement(c: Candidate, text: str, mode: str, opts, parse_verdict, parse_score) -> str:
    if mode == "verdict":
        verdict = parse_verdict(text)
        c.scores["judge"] = verdict
        if verdict != "EQUIVALENT":
            c.fail("judge", f"verdict {verdict}")
            return verdict
        if "rules" in c.failed:
            c.recovered = True
        return verdict
    score = parse_score(text)
    c.scores["judge"] = score
    if score is None:
        c.fail("judge", "verdict unparsable")
        return "unparsable"
    c.reward = score
    if score < opts.min_judge_score:
        c.fail("judge", f"score {score:g} < --min-judge-score {opts.min_judge_score:g}")
        return "below_min_score"
    c.recovered = "rules" in c.failed
    return "accepted"


# ---------------------------------------------------------------------------------------- run

def _check_flags(opts) -> None:
    if not (opts.pretrain or opts.judge_model or opts.no_judge):
        raise RejectionError("--task rejection_sampling needs the judge model: --pretrain or --judge-model "
                             "(or --no-judge)")
    if opts.load:
        raise RejectionError("--task rejection_sampling serves the judge from an HF directory: use --pretrain / "
                             "--judge-model (convert a Megatron checkpoint with tools/convert_ckpt.py)")
    if opts.judge_scope == "rule_rejected" and (not opts.use_rules or opts.no_judge):
        raise RejectionError("--judge-scope rule_rejected judges what the rules rejected: it needs --use-rules "
                             "and the judge (no --no-judge)")
    for name in ("judge_batch_size", "keep_per_prompt", "max_new_tokens", "prompt_max_len"):
        if getattr(opts, name) < 1:
            raise RejectionError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(opts, name)}")


def side_path(out: Path, suffix: str) -> Path:
    return out.with_name(out.stem + suffix)


def _write_atomic(path: Path, lines) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as fh:
        for line in lines:
            fh.write(line + "\n")
    os.replace(tmp, path)


def run_rejection(opts) -> Path:
    from mindr1.sampling.prompts import load_rows

    _check_flags(opts)
    keys = rejection_keys(opts)
    cfg = ReadabilityConfig.from_options(opts)
    groups = group_rows(load_rows(opts.dataset, opts.max_samples), keys, opts.use_ground_truth_answer or opts.use_rules)
    cands = [Candidate(g, j, text) for g in groups for j, text in enumerate(g.responses)]
    checked = {}
    if not opts.keep_truncated:
        checked["truncated"] = stage_truncated(cands)
    if opts.use_rules:
        checked["rules"] = stage_rules(cands, opts, pending=opts.judge_scope == "rule_rejected")
    n = stage_readability(cands, cfg)
    checked.update({name: n for name in ("mixed_language", "long_paragraph", "code_block", "tags", "repetition")
                    if name in _enabled(cfg)})
    judge_info = None
    if not opts.no_judge:
        judge_info = stage_judge(cands, opts)
        checked["judge"] = judge_info["judged"]
    for c in cands:
        if c.alive and c.reward is None:
            c.reward = 1.0  # passed every filter; a judge score, when there is one, is the reward
    chosen = select(cands, opts.keep_per_prompt)
    out = Path(opts.output_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(opts).items() if k not in ("no_progress",)}
    report = build_report(groups, cands, chosen, checked, judge_info, settings)
    chosen_ids = {id(c) for c in chosen}
    _write_atomic(side_path(out, "_scored.jsonl"),
                  (json.dumps(scored_row(c, id(c) in chosen_ids), ensure_ascii=False) for c in cands))
    if not chosen:
        stage = emptied_by(cands)
        report["empty"] = f"no response left after the {stage} filter"
    _write_atomic(side_path(out, "_report.json"), [json.dumps(report, indent=1, ensure_ascii=False)])
    if not chosen:
        raise SystemExit(f"{PROG}: every response was filtered out: the '{emptied_by(cands)}' filter removed the "
                         f"last ones (counts per filter in {side_path(out, '_report.json')}); {out} not written")
    _write_atomic(out, (json.dumps(output_row(c), ensure_ascii=False) for c in chosen))
    return out


def _enabled(cfg: ReadabilityConfig) -> list[str]:
    from mindr1.sampling.filters import enabled_filters

    return enabled_filters(cfg)


def _need(opts, *names: str) -> None:
    missing = [n for n in names if not getattr(opts, n)]
    if missing:
        raise RejectionError(f"--task {opts.task} needs " + ", ".join("--" + n.replace("_", "-") for n in missing))


def main(argv: Optional[list[str]] = None) -> int:
    from mindr1.data.sources import DataError
    from mindr1.sampling.judge import JudgeError
    from mindr1.sampling.prompts import PromptError
    from mindr1.sampling.slices import merge_slices

    opts = build_parser().parse_args(argv)
    try:
        if opts.task == "generate_vllm":
            _need(opts, "dataset", "output_path")
            if not (opts.pretrain or opts.load):
                raise RejectionError("--task generate_vllm needs --pretrain (or --load)")
            generate.check_sizes(opts, PROG)
            generate.check_output_path(opts, PROG)
            out = generate.run(opts)
        elif opts.task == "merge":
            _need(opts, "dataset", "output_path")
            out = merge_slices(opts.dataset, Path(opts.output_path))
        else:
            _need(opts, "dataset", "output_path")
            generate.check_output_path(opts, PROG)
            out = run_rejection(opts)
    except (RejectionError, PromptError, JudgeError, DataError, ValueError) as exc:
        raise SystemExit(f"{PROG}: {exc}") from None
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
