"""`python -m pdp` is the `pdp` command."""

from pdp.cli import main

raise SystemExit(main())
