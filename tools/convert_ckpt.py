"""HF <-> Megatron checkpoint conversion (MindSpeed-LLM flag names); see mindr1.checkpoint.convert."""
import sys

from mindr1.checkpoint.convert import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
