"""`python -m train ...` is the same as the `kineto` command."""
import sys

from train.cli import main

sys.exit(main())
