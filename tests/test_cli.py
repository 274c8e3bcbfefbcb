"""The ``recgrpc`` command as a newcomer meets it: flags anywhere, helpful --help and --version,
and one clear line with exit code 2 (never a traceback) for what an operator can fix."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from recgrpc import __version__
from recgrpc.cli import build_parser

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SUBCOMMANDS = [
    "migrate",
    "serve",
    "train-churn",
    "score-churn",
    "train",
    "evaluate",
    "import",
    "demo",
    "bench",
    "search",
    "stats",
]


def recgrpc(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The real command line, in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "recgrpc.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        check=False,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port some other program is listening on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


def test_global_flags_work_after_the_subcommand_too(tmp_path: Path) -> None:
    path = tmp_path / "after.db"
    result = recgrpc("migrate", "--database-url", f"sqlite:///{path}", "--log-level", "WARNING")
    assert result.returncode == 0, result.stderr
    assert path.is_file()
    assert f"sqlite:///{path}" in result.stdout

    parser = build_parser()
    after = parser.parse_args(["train", "--log-level", "DEBUG", "--database-url", "sqlite://"])
    assert (after.log_level, after.database_url) == ("DEBUG", "sqlite://")
    before = parser.parse_args(["--database-url", "sqlite:///a.db", "serve", "--port", "1"])
    assert before.database_url == "sqlite:///a.db"
    both = parser.parse_args(["--log-level", "INFO", "demo", "--log-level", "ERROR"])
    assert both.log_level == "ERROR"  # the one nearer the command wins


def test_help_shows_every_flag_with_its_default_and_no_backticks() -> None:
    top = recgrpc("--help")
    assert top.returncode == 0
    assert "`" not in top.stdout
    for name in SUBCOMMANDS:
        assert name in top.stdout
    helps = {}
    for name in SUBCOMMANDS:
        result = recgrpc(name, "--help")
        assert result.returncode == 0, result.stderr
        text = helps[name] = " ".join(result.stdout.split())
        assert "--database-url" in text, name
        assert "--log-level" in text, name
        assert "`" not in text, name
        assert "(default: RECGRPC_DATABASE_URL, else sqlite:///recgrpc.db)" in text, name
        assert "None" not in text, name
    assert "--port PORT gRPC port (default: RECGRPC_PORT, else 50051)" in helps["serve"]
    assert "(default: RECGRPC_METRICS_PORT, else 9464)" in helps["serve"]
    assert "--epochs EPOCHS maximum epochs" in helps["train"]
    assert "(default: RECGRPC_EPOCHS, else 30)" in helps["train"]
    assert "number of users (default: 3000)" in helps["demo"]
    assert "--duration DURATION seconds per measurement (default: 4.0)" in helps["bench"]


def test_version() -> None:
    result = recgrpc("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"recgrpc {__version__}"


def serve(tmp_path: Path, port: int, metrics_port: int) -> str:
    """The one line `recgrpc serve` ends with on loopback with these ports."""
    url = f"sqlite:///{tmp_path / 'x.db'}"
    ports = ("--port", str(port), "--metrics-port", str(metrics_port))
    return one_line_error(recgrpc("serve", "--database-url", url, "--host", "127.0.0.1", *ports))


def test_a_taken_grpc_port_is_one_line_naming_it_and_how_to_choose_another(
    taken_port: int, tmp_path: Path
) -> None:
    line = serve(tmp_path, taken_port, 0)
    assert f"gRPC port {taken_port}" in line
    assert "already in use" in line
    assert "--port" in line
    assert "RECGRPC_PORT" in line


def test_a_taken_metrics_port_too(taken_port: int, tmp_path: Path) -> None:
    line = serve(tmp_path, 0, taken_port)
    assert f"metrics port {taken_port}" in line
    assert "--metrics-port" in line
    assert "RECGRPC_METRICS_PORT" in line


def test_an_unreachable_database_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed = probe.getsockname()[1]
    line = one_line_error(
        recgrpc("migrate", "--database-url", f"postgresql://u:secret@127.0.0.1:{closed}/db")
    )
    assert line.startswith("recgrpc: cannot use the database at postgresql+psycopg://u:***@")
    assert "secret" not in line
    assert "refused" in line.lower()

    line = one_line_error(recgrpc("migrate", "--database-url", "sqlite:////no/such/dir/x.db"))
    assert "unable to open database file" in line

    line = one_line_error(recgrpc("train", "--database-url", f"sqlite:///{tmp_path / 'new.db'}"))
    assert "run recgrpc migrate first" in line


def test_an_unsupported_database_is_a_configuration_error() -> None:
    for url in ("mysql://root:secret@localhost/recs", "postgresql+psycopg2://h/db", "recs.db"):
        line = one_line_error(recgrpc("migrate", "--database-url", url))
        assert "configuration error" in line
        assert "sqlite:///FILE" in line
        assert "secret" not in line
    line = one_line_error(recgrpc("migrate", env={"RECGRPC_DATABASE_URL": "mysql://h/db"}))
    assert "'mysql' is not a supported database" in line


# Runs the CLI in a fresh interpreter in which the server extra's packages cannot be imported,
# as in `pip install recgrpc` without `[server]`.
CLIENT_ONLY = r"""
import importlib.abc, json, sys
blocked = tuple(json.loads(sys.argv[1]))

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Blocker())
from recgrpc.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_a_client_only_install_says_how_to_get_the_server() -> None:
    from recgrpc.cli_help import SERVER_MODULES

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", CLIENT_ONLY, json.dumps(sorted(SERVER_MODULES)), *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            check=False,
        )

    for command in (["migrate"], ["serve", "--port", "0"], ["demo"]):
        line = one_line_error(run(*command))
        assert 'pip install "recgrpc[server]"' in line, command
    assert run("--version").returncode == 0
    assert run("--help").returncode == 0


def test_bench_plots_without_matplotlib_font_cache_lines(tmp_path: Path) -> None:
    """The CLI's logging set-up keeps matplotlib's font-cache narration out of the output."""
    script = (
        "from recgrpc.logs import configure_logging\n"
        "configure_logging('INFO')\n"
        "import matplotlib\n"
        "matplotlib.use('Agg')\n"
        "import matplotlib.pyplot as plt\n"
        "fig, ax = plt.subplots()\n"
        "ax.plot([1, 2], [3, 4], label='x')\n"
        "ax.set_title('latency')\n"
        "ax.legend()\n"
        f"fig.savefig({str(tmp_path / 'plot.png')!r})\n"
    )
    fresh_cache = {**os.environ, "MPLCONFIGDIR": str(tmp_path / "mpl")}
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env=fresh_cache,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "plot.png").is_file()
    assert result.stderr == ""
