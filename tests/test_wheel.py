"""The package as a user installs it: the wheel holds every file of the package, and `brgm demo` and
`brgm info` run from it in a folder outside the repository."""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from PIL import Image

tomllib = pytest.importorskip("tomllib")

REPO = Path(__file__).resolve().parent.parent


def _source_folders() -> dict[str, Path]:
    """Import path of each package folder ("brgm_pyro/models") -> its folder in the repository, as
    pyproject.toml maps them."""
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapped = setuptools.get("package-dir", {})
    return {name.replace(".", "/"): REPO / mapped.get(name, name.replace(".", "/")) for name in
            {*mapped, *(package for package in setuptools["packages"] if "." not in package)}}


def _package_files() -> set[str]:
    """Every file of the package folders as the wheel should hold it (bytecode and hidden files aside)."""
    files = set()
    for target, folder in _source_folders().items():
        for path in folder.rglob("*"):
            relative = path.relative_to(folder)
            if path.is_file() and "__pycache__" not in relative.parts and not path.name.startswith("."):
                files.add(f"{target}/{relative.as_posix()}")
    return files


def _run(command: list) -> str:
    """Run a setup step; its output is shown only when it fails."""
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{' '.join(map(str, command))} failed:\n{result.stdout}{result.stderr}"
    return result.stdout


def _build_wheel(tmp_path: Path) -> Path:
    """``pip wheel . --no-deps`` on a copy of the sources (the build writes into its source tree),
    without build isolation, so that it needs no network."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, source / name)
    for folder in {folder for folder in _source_folders().values() if folder.parent == REPO}:
        shutil.copytree(folder, source / folder.name, ignore=shutil.ignore_patterns("__pycache__"))
    _run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "--quiet",
          "--wheel-dir", str(tmp_path / "dist")])
    (wheel,) = (tmp_path / "dist").glob("brgm_pyro-*.whl")
    return wheel


def _venv_with(wheel: Path, folder: Path) -> Path:
    """A new virtual environment holding the wheel; the dependencies are those of this interpreter,
    reused through a .pth file (which adds their folders, not the editable install of the repository)."""
    _run([sys.executable, "-m", "venv", "--without-pip", str(folder)])
    python = folder / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "--no-compile",
          "--quiet", str(wheel)])
    site_packages = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).strip())
    dependencies = [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages") and Path(p).is_dir()]
    (site_packages / "zz-dependencies.pth").write_text("\n".join(dependencies) + "\n")
    return site_packages


@pytest.mark.slow
def test_the_installed_wheel_runs_the_demo_outside_the_repository(tmp_path):
    wheel = _build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        missing = _package_files() - set(archive.namelist())
    assert not missing, f"not in the wheel (add them to package-data in pyproject.toml): {sorted(missing)}"

    venv = tmp_path / "venv"
    site_packages = _venv_with(wheel, venv)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    # One thread: the networks are small, and more threads than free cores slow them down several times.
    env = {**{key: value for key, value in os.environ.items() if key != "PYTHONPATH"}, "OMP_NUM_THREADS": "1"}
    # `brgm info` as the console script runs it (brgm_pyro.cli:main), printing first where brgm_pyro is.
    info = subprocess.run(
        [venv / "bin" / "python", "-c", "import sys, brgm_pyro; print(brgm_pyro.__file__); "
         "from brgm_pyro.cli import main; sys.exit(main(sys.argv[1:]))", "info", "fashion-mnist-32"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=300)
    assert info.returncode == 0, info.stderr
    location, *table = info.stdout.splitlines()
    assert Path(location) == site_packages / "brgm_pyro" / "__init__.py"
    assert any(line.split() == ["resolution", "32"] for line in table), info.stdout

    demo = subprocess.run([venv / "bin" / "brgm", "demo", "--steps", "2", "--out", "demo", "--quiet"],
                          cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    assert demo.returncode == 0, demo.stderr
    out = elsewhere / "demo"
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["metrics"]) == 4 and len(metrics["examples"]) == 8
    for task in metrics["metrics"]:  # a row per example: input | baseline | BRGM | truth, 4x enlarged, labelled
        grid = Image.open(out / f"{task}.png")
        assert grid.mode == "RGB" and grid.width > 4 * 32 * 4 and grid.height > 8 * 32 * 4
    for methods in metrics["metrics"].values():
        assert "BRGM" in methods and len(methods) == 2
        for row in methods.values():  # the shipped evaluator was found: every metric is there
            assert set(row) == {"psnr", "ssim", "fmnist_eval_distance", "class_fidelity"}
    assert "| superres-x4 | BRGM |" in demo.stdout and "brgm demo: 4 tasks" in demo.stdout
    print(demo.stdout)
