"""One of `plan`'s simulations in a process of its own, so two run on two cores at once (see
``_plan._elsewhere``): ``python -m imagedist._plan_process ARGUMENTS RESULT`` reads the pickled
config and options from the file ARGUMENTS and writes the pickled plan to the file RESULT.

Both files are written by the parent `plan` in a folder of its own: nothing from outside is
unpickled here.
"""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

from imagedist._plan import _simulate_in_folder


def main(arguments: str, result: str) -> None:
    config, options = pickle.loads(Path(arguments).read_bytes())
    plan = _simulate_in_folder(config, **options)
    Path(result).write_bytes(pickle.dumps(plan))


if __name__ == "__main__":
    main(*sys.argv[1:3])
