"""Run code in a fresh interpreter: what a module imports, and which processes it starts, as a user would see."""

import subprocess
import sys


def python_stdout(code: str, *args: str) -> str:
    """The stdout of ``python -c code``; the test fails with the child's stderr if it fails."""
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout
