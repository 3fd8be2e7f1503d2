"""`mindr1 rejection-sample` without a judge model: the rules table, selection, the report, the
MindSpeed flat layout, bad input and the merge of --iter slices (pure file work + math-verify)."""
import json

import pytest

from mindr1.rl.rewards.answers import extract_answer_phrase, extract_any_answer, last_number
from mindr1.sampling.rejection import main

GSM8K_72 = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72"

# (response, gt_answer, right?) -- SmolLM2-135M-Instruct's real answers to GSM8K and equivalent forms
RULES = [
    ("Natalia sold 48 / 2 = 24 clips in May.\nSo she sold 48 + 24 = 72 clips altogether.", GSM8K_72, True),
    ("In May she sold half of 48, which is 24. Altogether: \\boxed{72} clips in 2 months.", GSM8K_72, True),
    ("<think>\n48 + 24\n</think>\n<answer>\n72\n</answer>", GSM8K_72, True),
    ("48 + 24 = 72\n#### 72", GSM8K_72, True),
    ("The answer is: $1,200.", "He earns 12 * 100 = <<12*100=1200>>1200 dollars.\n#### 1200", True),
    ("Half of the pie is \\boxed{\\frac{1}{2}}.", "0.5", True),
    ("So the final answer is 0.50.", "#### 0.5", True),
    ("She needs $100 - $50 - $15 - $30 = $5 more.", "#### 5", True),
    # wrong
    ("Natalia sold clips to 48 * 2 = 96 clips in April.\nNatalia sold 192 / 4 = 49 clips.", GSM8K_72, False),
    ("So, she sold a total of 1.4 + 0.6 = 2 clips.", GSM8K_72, False),
    ("The answer is \\boxed{24}, since 72 clips were sold before.", GSM8K_72, False),  # the box wins
    ("Weng earns 12/60 = $0.2 per minute. So she earned 0.2 x 50 = $10.", "#### 9", False),
    # unparsable / cut off
    ("I am not sure how to solve this problem.", GSM8K_72, False),
    ("Natalia sold all the", GSM8K_72, False),
    ("", GSM8K_72, False),
]


def test_answer_extractors():
    assert extract_answer_phrase("So the final answer is: **$1,234**.") == "1,234"
    assert extract_answer_phrase("No phrase here 5") is None
    assert last_number("x = -3, so 5 + 3 = 8 apples.") == "8"
    assert last_number("the total is -12.") == "-12"
    assert last_number("ends at 1,000.50 dollars") == "1,000.50"
    assert last_number("no digits") is None
    assert extract_any_answer("\\boxed{7} then 9") == "7"
    assert extract_any_answer("42 apples\n#### 41") == "41"


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _rs(tmp_path, data, *extra, out="rs.jsonl"):
    return main(["--task", "rejection_sampling", "--dataset", data, "--output-path", str(tmp_path / out),
                 "--no-judge", "--no-progress", *extra])


def _read(path):
    return [json.loads(line) for line in open(path)]


def test_rules_keep_exactly_the_right_responses(tmp_path):
    # MindSpeed's flat layout: one row per response, here each its own prompt
    rows = [{"prompt": f"question {i}", "gt_answer": gt, "output": text} for i, (text, gt, _) in enumerate(RULES)]
    data = _write(tmp_path / "gen.jsonl", rows)
    assert _rs(tmp_path, data, "--use-ground-truth-answer", "--use-rules", "--map-keys",
               '{"prompt":"prompt", "gt_answer":"gt_answer", "response":"output"}') == 0
    kept = [r["output"] for r in _read(tmp_path / "rs.jsonl")]
    assert kept == [text for text, _, right in RULES if right]
    report = json.load(open(tmp_path / "rs_report.json"))
    wrong = sum(not right for *_, right in RULES)
    assert report["filters"]["rules"] == {"checked": len(RULES), "failed": wrong, "dropped": wrong}
    assert report["input"] == {"prompts": len(RULES), "responses": len(RULES)}


def _gen_row(index, outputs, gt="#### 72", reasons=None, tokens=None):
    return {"index": index, "prompt": f"How many clips, case {index}?", "input": "", "gt_answer": gt,
            "output": outputs, "finish_reasons": reasons or ["stop"] * len(outputs),
            "response_tokens": tokens or [len(o.split()) for o in outputs], "dataset_size": 3}


def test_selection_report_and_best_of_n_rows(tmp_path):
    rows = [
        _gen_row(0, ["So 48 + 24 = 72 clips in all, as computed above.", "72", "It is 71.", "So 48 + 24 = 72 clips."],
                 tokens=[12, 1, 3, 7]),
        _gen_row(1, ["It is 70.", "Then 72 " * 30, "I think it is 72 clips", "I think it is 72 clips"],
                 reasons=["stop", "stop", "stop", "length"], tokens=[3, 60, 6, 6]),
        _gen_row(2, ["No idea.", "It is 5.", "It is 6.", "It is 7."]),
    ]
    data = _write(tmp_path / "gen.jsonl", rows)
    assert _rs(tmp_path, data, "--use-ground-truth-answer", "--use-rules", "--keep-per-prompt", "2") == 0
    out = _read(tmp_path / "rs.jsonl")
    # prompt 0: the two shortest right ones; prompt 1: the repetitive one and the truncated one are out
    assert [(r["index"], r["output"]) for r in out] == [(0, "72"), (0, "So 48 + 24 = 72 clips."),
                                                        (1, "I think it is 72 clips")]
    assert all(set(r) >= {"prompt", "output", "reward", "gt_answer", "scores", "filters_failed"} for r in out)
    assert out[0]["reward"] == 1.0 and out[0]["scores"] == {"rules": 1.0} and out[0]["filters_failed"] == []
    report = json.load(open(tmp_path / "rs_report.json"))
    f = report["filters"]
    assert f["truncated"] == {"checked": 12, "failed": 1, "dropped": 1}
    assert f["rules"] == {"checked": 11, "failed": 6, "dropped": 6}
    assert f["repetition"]["dropped"] == 1
    assert report["selection"] == {"survivors": 4, "kept": 3, "dropped": 1, "prompts_with_output": 2}
    assert [p["passed"] for p in report["pass_rate"]["per_prompt"]] == [3, 1, 0]
    assert report["pass_rate"]["histogram"] == {"(0.5,0.75]": 1, "(0,0.25]": 1, "0": 1}
    assert report["length_histogram"]["unit"] == "tokens" and sum(report["length_histogram"]["kept"].values()) == 3
    scored = _read(tmp_path / "rs_scored.jsonl")
    assert len(scored) == 12 and sum(r["kept"] for r in scored) == 3
    assert scored[7]["dropped_at"] == "truncated"


def test_empty_result_writes_the_report_and_names_the_filter(tmp_path):
    data = _write(tmp_path / "gen.jsonl", [_gen_row(0, ["It is 5.", "It is 6."])])
    with pytest.raises(SystemExit, match=r"the 'rules' filter removed the last ones"):
        _rs(tmp_path, data, "--use-ground-truth-answer", "--use-rules")
    assert not (tmp_path / "rs.jsonl").exists()
    report = json.load(open(tmp_path / "rs_report.json"))
    assert report["empty"] == "no response left after the rules filter"
    assert report["filters"]["rules"]["dropped"] == 2


@pytest.mark.parametrize("rows,flags,message", [
    ([{"prompt": "q", "gt_answer": "1", "responses": ["a"]}], [],
     r"line 1: no response column 'output' \(--map-keys response\); columns: \['gt_answer', 'prompt', 'responses'\]"),
    ([{"prompt": "q", "output": ["a"]}], ["--use-ground-truth-answer", "--map-keys", '{"gt_answer": ""}'],
     r'--use-ground-truth-answer needs a "gt_answer" column in --map-keys'),
    ([{"prompt": "q", "output": ["a"]}], ["--use-ground-truth-answer"],
     r"line 1: no ground truth in column 'gt_answer' \(--map-keys gt_answer\)"),
    ([{"prompt": "q", "gt_answer": "1", "output": 5}], [], r"line 1: column 'output' must be a string or a list"),
    ([{"prompt": "q", "gt_answer": "1", "output": ["a"]}], ["--use-rules", "--map-keys", '{"gt_answer": ""}'],
     r'--use-rules needs a "gt_answer" column in --map-keys'),
    ([{"prompt": "q", "gt_answer": "1", "output": ["a"]}], ["--use-ground-truth-answer", "--judge-scope", "rule_rejected"],
     r"--judge-scope rule_rejected .* needs --use-rules"),
    ([{"prompt": "q", "gt_answer": "1", "output": ["a"]}], ["--map-keys", "{bad json"], r"--map-keys is not valid JSON"),
])
def test_bad_input_is_a_clear_message_and_no_output(tmp_path, rows, flags, message):
    data = _write(tmp_path / "gen.jsonl", rows)
    with pytest.raises(SystemExit, match=message):
        _rs(tmp_path, data, *flags)
    assert not (tmp_path / "rs.jsonl").exists()


def test_merge_joins_slices_and_refuses_overlap_gaps_and_unfinished(tmp_path):
    def slice_file(name, indices, size=6):
        return _write(tmp_path / name, [dict(_gen_row(i, ["a"]), dataset_size=size) for i in indices])

    slice_file("g_iter1.jsonl", [2, 3])
    slice_file("g_iter0.jsonl", [0, 1])
    slice_file("g_iter2.jsonl", [4, 5])
    merged = tmp_path / "merged.jsonl"
    assert main(["--task", "merge", "--dataset", str(tmp_path / "g_iter*.jsonl"), "--output-path", str(merged)]) == 0
    assert [r["index"] for r in _read(merged)] == [0, 1, 2, 3, 4, 5]

    slice_file("h_iter0.jsonl", [0, 1])
    slice_file("h_iter2.jsonl", [4, 5])
    with pytest.raises(SystemExit, match=r"prompts 2-3 are in none of the 2 slices .*--iter 1 with --rollout-batch-size 2"):
        main(["--task", "merge", "--dataset", str(tmp_path / "h_iter*.jsonl"), "--output-path", str(tmp_path / "h.jsonl")])
    slice_file("o_iter0.jsonl", [0, 1, 2])
    slice_file("o_iter1.jsonl", [2, 3, 4, 5])
    with pytest.raises(SystemExit, match=r"o_iter0.jsonl and .*o_iter1.jsonl both hold prompt 2: overlapping"):
        main(["--task", "merge", "--dataset", str(tmp_path / "o_iter*.jsonl"), "--output-path", str(tmp_path / "o.jsonl")])
    (tmp_path / "h_iter1.jsonl.partial").write_text("")
    with pytest.raises(SystemExit, match=r"h_iter1.jsonl.partial: a slice is unfinished"):
        main(["--task", "merge", "--dataset", str(tmp_path / "h_iter*.jsonl"), "--output-path", str(tmp_path / "h.jsonl")])
    assert not (tmp_path / "h.jsonl").exists() and not (tmp_path / "o.jsonl").exists()


def test_dataset_takes_format_at_path_and_the_data_alias(tmp_path):
    path = tmp_path / "gen.txt"  # a name that does not say its format
    path.write_text(json.dumps(_gen_row(0, ["So 48 + 24 = 72.", "It is 70."])) + "\n")
    assert main(["--task", "rejection_sampling", "--data", f"jsonl@{path}", "--output-path", str(tmp_path / "o.jsonl"),
                 "--no-judge", "--no-progress", "--use-rules"]) == 0
    assert [r["output"] for r in _read(tmp_path / "o.jsonl")] == ["So 48 + 24 = 72."]
    with pytest.raises(SystemExit, match=r"unsupported file type '.txt'"):
        main(["--task", "rejection_sampling", "--data", str(path), "--output-path", str(tmp_path / "p.jsonl"),
              "--no-judge"])


def test_output_path_may_not_replace_the_input(tmp_path):
    data = _write(tmp_path / "gen.jsonl", [{"prompt": "1+1?", "gt_answer": "2", "output": ["\\boxed{2}"]}])
    before = open(data).read()
    with pytest.raises(SystemExit, match=r"would replace the --dataset input"):
        main(["--task", "rejection_sampling", "--dataset", data, "--output-path", data, "--no-judge", "--no-progress"])
    with pytest.raises(SystemExit, match=r"is a directory"):
        main(["--task", "rejection_sampling", "--dataset", data, "--output-path", str(tmp_path), "--no-judge",
              "--no-progress"])
    assert open(data).read() == before
