"""A built wheel, installed into a fresh venv, finds its configs from any working directory and trains on the data
it carries."""

import json
import os
import socket
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from diagnose.data.sources import SOURCES

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow(seconds=8)
def test_wheel_installs_into_a_fresh_venv_and_trains_from_another_directory(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist),
                    str(REPO)], check=True, capture_output=True)
    (wheel,) = dist.glob("diagnose-*.whl")
    with zipfile.ZipFile(wheel) as archive:  # the TensorBoard tab: its page, the chart library, its entry point
        names = archive.namelist()
        assert {"diagnose/tab/static/index.js", "diagnose/tab/static/uPlot.esm.js"} <= set(names)
        entry_points = archive.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "[tensorboard_plugins]" in entry_points and "diagnose.tab.plugin:DiagnosePlugin" in entry_points
    shipped = {f"diagnose/data/shipped/fashion_mnist_sample/{file}" for file in
               [*SOURCES["fashion_mnist_sample"].checksums, "LICENSE", "README.md"]}
    assert shipped <= set(names)
    assert wheel.stat().st_size < 8e6  # the sample is ~5.2 MB of it: no more data slipped in

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    # The dependencies (torch, hydra, ...) come from this environment, not from the network; a path line in a
    # .pth does not run the .pth files it contains, so this environment's editable `diagnose` stays out.
    (site / "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", str(wheel)],
                   check=True, capture_output=True)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = subprocess.run([python, "-c", "import diagnose; print(diagnose.__file__)"], cwd=elsewhere,
                           check=True, capture_output=True, text=True).stdout
    assert where.startswith(str(venv)), where
    # The default data, with no dataset on disk and every download refused (urllib goes through a proxy nobody
    # answers at): the sample comes from the installed package.
    empty = tmp_path / "empty"
    empty.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        proxy = f"http://127.0.0.1:{s.getsockname()[1]}"
    offline = {**os.environ, "DIAGNOSE_DATA": str(empty), "http_proxy": proxy, "https_proxy": proxy, "no_proxy": ""}
    # a sweep of two: the wheel carries the local launcher and the sweeper (every sweep's) where Hydra looks for
    # plugins, and each job trains on the sample
    result = subprocess.run(
        [venv / "bin" / "diagnose", "train", "-m", "hydra/launcher=local", "batch=8,16", "steps=2", "device=cpu",
         "diag=off", "threads=1", "model.widths=[8]"], cwd=elsewhere, capture_output=True, text=True, timeout=300,
        env=offline)
    assert result.returncode == 0, result.stderr
    assert "data: the Fashion-MNIST sample shipped with diagnose" in result.stdout + result.stderr
    finished = elsewhere.glob("outputs/multirun/*/*/batch=*/metrics.json")
    assert [json.loads(metrics.read_text())["status"] for metrics in finished] == ["completed"] * 2
    assert list(empty.iterdir()) == []
    refused = subprocess.run([venv / "bin" / "diagnose", "train", "data=mnist"], cwd=elsewhere, capture_output=True,
                             text=True, timeout=300, env=offline)
    assert refused.returncode == 2 and "Could not download" in refused.stderr  # the same setting refuses downloads
    for plugin in ("diagnose_launcher", "diagnose_sweeper"):
        assert str(venv) in subprocess.run([python, "-c", f"import hydra_plugins.{plugin} as m; print(m.__file__)"],
                                           cwd=elsewhere, check=True, capture_output=True, text=True).stdout
