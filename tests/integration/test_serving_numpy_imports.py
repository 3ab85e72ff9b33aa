"""A fresh interpreter serving the built-in MLP in numpy never imports torch (or pandas)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from model_files import digits_like


def test_serving_the_mlp_never_imports_torch(tmp_path: Path) -> None:
    folder, _ = digits_like(tmp_path)
    code = (
        "import sys\n"
        "from aicloud.serving.app import ReplicaConfig, build_app\n"
        "from aicloud.serving.runtime import ArtifactRuntime\n"
        f"app = build_app(ReplicaConfig(key='k'), runtime=ArtifactRuntime({str(folder)!r}), start=True)\n"
        "assert app.runtime.engine == 'numpy'\n"
        "assert 'torch' not in sys.modules and 'pandas' not in sys.modules, sorted(sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
