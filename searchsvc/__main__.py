import sys

from searchsvc.cli import main

sys.exit(main())
