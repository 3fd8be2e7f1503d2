"""N-gram decontamination of a training file against the evaluation benchmarks; see mindr1.eval.decontaminate."""
import sys

from mindr1.eval.decontaminate import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
