"""`python -m loadtest.bench`: see cli.py."""
import sys

from loadtest.bench.cli import main

sys.exit(main())
