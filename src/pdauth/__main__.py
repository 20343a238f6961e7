"""``python -m pdauth`` runs the command-line interface."""

from __future__ import annotations

from pdauth.cli import main

raise SystemExit(main())
