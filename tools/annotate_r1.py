"""R1-distill rows (OpenR1-Math style) -> cold-start SFT rows (see mindr1.data.annotate)."""
import sys

from mindr1.data.annotate import main

if __name__ == "__main__":
    sys.exit(main())
