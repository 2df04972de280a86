import sys

from autoloss.cli.app import main

sys.exit(main())
