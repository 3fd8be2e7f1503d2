"""R1 annotation: the exact cold-start format, correctness filter, mapped columns, bad rows."""
import json

from mindr1.data.annotate import format_output, main


def test_format_has_the_right_tags():
    assert format_output("2+2 is 4.", "4") == "<think>2+2 is 4.</think>\n<answer>\\boxed{4}</answer>"
    assert format_output("<think>\nwork\n</think>", "\\boxed{x^2}") == "<think>work</think>\n<answer>\\boxed{x^2}</answer>"


def test_cli_filters_maps_and_skips(tmp_path, capsys):
    rows = [{"q": "1+1?", "sol": "One and one.", "ans": 2, "correctness_count": 2},
            {"q": "2+2?", "sol": "Wrong.", "ans": "5", "correctness_count": 0},
            {"q": "3+3?", "sol": "", "ans": "6", "correctness_count": 1}]
    src = tmp_path / "r1.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "sft.jsonl"
    keys = '{"problem":"q","solution":"sol","answer":"ans"}'
    assert main(["--input", str(src), "--output", str(out), "--map-keys", keys]) == 1
    assert f"{src} line 3: empty_field" in capsys.readouterr().err and not out.exists()
    assert main(["--input", str(src), "--output", str(out), "--map-keys", keys, "--skip-invalid"]) == 0
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert got == [{"instruction": "1+1?", "output": "<think>One and one.</think>\n<answer>\\boxed{2}</answer>",
                    "answer": "2"}]
