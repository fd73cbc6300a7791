"""Run every benchmark in bench/ one after the other (``make bench``). Not a test: it only prints."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

for script in sorted(HERE.glob("bench_*.py")):
    print(f"=== {script.name}", flush=True)
    subprocess.run([sys.executable, str(script)], check=False)
