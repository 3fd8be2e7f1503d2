"""Preprocessing start-up stays light: no torch, megatron, transformers or triton import."""
import json
import subprocess
import sys

from mindr1.artifacts import qwen25_tokenizer_dir

SCRIPT = """
import sys
from mindr1.data.preprocess import main
rc = main(sys.argv[1:])
heavy = sorted(m for m in ("torch", "megatron", "transformers", "triton") if m in sys.modules)
print("HEAVY", ",".join(heavy))
sys.exit(rc)
"""


def test_preprocess_imports_nothing_heavy(tmp_path):
    raw = tmp_path / "rows.jsonl"
    raw.write_text("".join(json.dumps({"instruction": f"{i}+1?", "output": str(i + 1)}) + "\n" for i in range(20)))
    proc = subprocess.run([sys.executable, "-c", SCRIPT, "--input", str(raw), "--output-prefix", str(tmp_path / "o"),
                           "--handler-name", "AlpacaStyleInstructionHandler", "--prompt-type", "qwen_r1",
                           "--tokenizer-name-or-path", str(qwen25_tokenizer_dir()), "--workers", "2"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY \n" in proc.stdout
