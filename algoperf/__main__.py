"""`python -m algoperf` (also what torchrun runs with `-m algoperf`): the command lives in cli/."""

import sys

from algoperf.cli.main import main

sys.exit(main())
