"""Run a WSGI application on Werkzeug's development server: `python -m ... PORT module:attr`."""

from __future__ import annotations

import importlib
import sys

from werkzeug.serving import run_simple


def main() -> None:
    """Serve `module:attr` on 127.0.0.1:PORT with a thread per request."""
    port, target = int(sys.argv[1]), sys.argv[2]
    module, _, attribute = target.partition(":")
    app = getattr(importlib.import_module(module), attribute)
    run_simple("127.0.0.1", port, app, threaded=True)


if __name__ == "__main__":
    main()
