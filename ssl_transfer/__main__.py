import sys

from ssl_transfer.cli import main

sys.exit(main())
