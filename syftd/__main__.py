"""``python -m syftd``: the same as the ``syftd`` console script."""

from syftd.cli import main

raise SystemExit(main())
