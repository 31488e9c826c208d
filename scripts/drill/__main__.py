"""`python scripts/drill [options]` (or `python -m drill` from scripts/): the crash drill."""

import sys
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent.parent
if sys.path and Path(sys.path[0]).resolve() == SCRIPTS / "drill":
    sys.path[0] = str(SCRIPTS)  # run as a folder: import the package, not its modules
elif str(SCRIPTS) not in sys.path:
    sys.path.insert(0, str(SCRIPTS))

from drill.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
