"""``python -m attention_scratch.bench``: the CPU benchmark (``--gpu``: the GPU one)."""
import sys

from .cpu import main

sys.exit(main())
