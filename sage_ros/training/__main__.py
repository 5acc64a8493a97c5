import sys

from sage_ros.training.cli import main

sys.exit(main())
