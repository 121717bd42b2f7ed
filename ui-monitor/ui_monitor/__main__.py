"""``python -m ui_monitor``: the same as ``wasm-engine-ui-monitor``."""

from .main import main

raise SystemExit(main())
