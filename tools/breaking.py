"""buf breaking: the protos in this tree against the protos on main.

buf cannot resolve protovalidate's import from the BSR here, so both sides are compiled to
images by tools/protogen.py and compared image to image.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AGAINST = os.environ.get("BUF_BREAKING_AGAINST", "main")


def main() -> int:
    has_ref = subprocess.run(
        ["git", "rev-parse", "--verify", "-q", f"{AGAINST}:protos"], cwd=ROOT, capture_output=True
    )
    if has_ref.returncode != 0:
        print(f"buf breaking: {AGAINST} has no protos yet; nothing to compare")
        return 0
    archive = subprocess.run(
        ["git", "archive", AGAINST, "protos"], cwd=ROOT, capture_output=True, check=True
    ).stdout
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(tmp, filter="data")
        old_image = Path(tmp) / "against.binpb"
        protogen = [sys.executable, str(ROOT / "tools" / "protogen.py")]
        subprocess.run(
            [*protogen, "--protos", f"{tmp}/protos", "--image-only", str(old_image)], check=True
        )
        new_image = Path(tmp) / "current.binpb"
        subprocess.run([*protogen, "--image-only", str(new_image)], check=True)
        result = subprocess.run(
            [
                "buf",
                "breaking",
                str(new_image),
                "--against",
                str(old_image),
                "--config",
                str(ROOT / "protos" / "buf.yaml"),
                "--path",
                "samhandling",
            ],
            env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
        )
        if result.returncode == 0:
            print(f"buf breaking: no breaking changes against {AGAINST}")
        return result.returncode


if __name__ == "__main__":
    raise SystemExit(main())
