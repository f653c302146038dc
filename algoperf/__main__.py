"""`python -m algoperf` (also what torchrun runs with `-m algoperf`)."""

import sys

from algoperf.cli import main

sys.exit(main())
