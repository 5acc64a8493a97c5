import sys

from sage_ros.cli import main

sys.exit(main())
