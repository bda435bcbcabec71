"""`python -m exporter`: the same program as the `rtk-export` script."""

import signal
import sys

# Until cli.main installs its own handlers, a SIGTERM must still end in exit 143, not a kill.
signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))

from exporter.cli import main  # noqa: E402 - after the handler, on purpose

if __name__ == "__main__":
    raise SystemExit(main())
