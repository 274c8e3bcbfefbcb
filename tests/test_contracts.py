"""The checked-in generated code must be exactly what the .proto files generate."""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GENERATED = ROOT / "src" / "recgrpc" / "v1"


def test_generated_code_matches_protos(tmp_path: Path) -> None:
    protos = sorted((ROOT / "protos" / "recgrpc" / "v1").glob("*.proto"))
    assert protos, "no .proto files found"
    bin_dir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{ROOT / 'protos'}",
            f"--python_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            f"--mypy_out={tmp_path}",
            f"--mypy_grpc_out={tmp_path}",
            *map(str, protos),
        ],
        check=True,
        env=env,
        capture_output=True,
    )
    fresh = tmp_path / "recgrpc" / "v1"
    generated = sorted(p.name for p in fresh.iterdir() if p.suffix in {".py", ".pyi"})
    checked_in = sorted(
        p.name
        for p in GENERATED.iterdir()
        if p.suffix in {".py", ".pyi"} and p.name != "__init__.py"
    )
    assert generated == checked_in, "generated file set differs: run `make proto`"
    _, mismatch, errors = filecmp.cmpfiles(fresh, GENERATED, generated, shallow=False)
    stale = mismatch + errors
    assert not stale, f"stale generated code {stale}: run `make proto`"


def test_enums_follow_the_prefix_convention() -> None:
    from recgrpc.v1 import recommendation_pb2 as pb

    for enum in pb.DESCRIPTOR.enum_types_by_name.values():
        prefix = "".join(f"_{c}" if c.isupper() else c.upper() for c in enum.name).lstrip("_")
        assert enum.values[0].name == f"{prefix}_UNSPECIFIED"
        assert enum.values[0].number == 0
        assert all(v.name.startswith(prefix + "_") for v in enum.values)
