"""Raw Alpaca / R1-Alpaca / ShareGPT / plain-text data -> Megatron indexed dataset (see mindr1.data.preprocess)."""
import sys

from mindr1.data.preprocess import main

if __name__ == "__main__":
    sys.exit(main())
