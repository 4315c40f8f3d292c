"""`python -m agent probe …` — same as the `synlens-agent` entry point."""

import sys

from agent.cli import main

if __name__ == "__main__":
    sys.exit(main())
