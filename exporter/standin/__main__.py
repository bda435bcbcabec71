"""`python -m exporter.standin --port 0 --token T --account-id A [--fault-...]`."""

from exporter.standin.server import main

if __name__ == "__main__":
    main()
