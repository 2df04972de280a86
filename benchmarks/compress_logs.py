"""Compress the per-step logs of finished runs, so that committed results stay small.

Every run folder under the given folders that holds ``metrics.json`` (a finished run, never
trained again) gets its ``log.jsonl`` replaced by ``log.jsonl.gz`` (gzip level 9, mtime 0, no file
name in the header: the same log always gives the same bytes, so running this again changes
nothing). Unfinished runs keep their plain log. Everything that reads a run's log (``autoloss
plot``, comparison curves, ``autoloss compare`` on a finished folder, ``pretrain_plateau.py``)
reads the compressed one too (:mod:`autoloss.utils.run_logs`). Folders named ``preregistered``
are not entered: a registered experiment reads them at a fixed commit.

    python benchmarks/compress_logs.py results
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's reader and writer, installed or not

SKIP = ("preregistered",)


def main(argv: list[str] | None = None) -> int:
    from autoloss.utils.run_logs import compress_finished_logs

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="+", type=Path, help="folders to search for run folders")
    args = parser.parse_args(argv)
    plain = packed = 0
    for root in args.roots:
        if not root.is_dir():
            parser.error(f"{root} is not a folder")
        for log in compress_finished_logs(root, skip=SKIP):
            print(f"{log.path}: {log.plain_bytes} -> {log.gz_bytes} bytes")
            plain, packed = plain + log.plain_bytes, packed + log.gz_bytes
    print(f"compressed {plain} bytes of logs into {packed}" if plain else
          "no uncompressed log of a finished run")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
