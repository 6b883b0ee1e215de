"""``python -m benchmarks``: see ``python -m benchmarks --help``."""

from .runner import main

if __name__ == "__main__":
    raise SystemExit(main())
