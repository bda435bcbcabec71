"""`python -m exporter`: the same program as the `rtk-export` script."""

from exporter.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
