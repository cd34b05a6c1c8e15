"""`python -m kineto ...` is the same as the `kineto` command."""
import sys

from kineto.cli import main

sys.exit(main())
