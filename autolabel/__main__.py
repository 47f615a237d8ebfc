"""`python -m autolabel ...` (and `torchrun ... -m autolabel ...`): the `autolabel` command."""
import sys

from autolabel.cli import main

sys.exit(main())
