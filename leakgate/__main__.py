from __future__ import annotations

from leakgate.cli import main

raise SystemExit(main())
