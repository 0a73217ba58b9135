"""``python -m mmrec`` runs the command line."""
import sys

from mmrec.cli import main

sys.exit(main())
