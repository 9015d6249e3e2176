"""Screenshots of TensorBoard's dashboards for a folder of runs, as a user sees them at TensorBoard's defaults.

    python scripts/screenshots.py outputs/multirun/2026-11-30/10-00-00 --out shots/

starts `tensorboard --logdir FOLDER` on a free port of 127.0.0.1, waits until it serves, and saves one PNG per
dashboard (Custom Scalars, Scalars, Images, Text, HParams) taken with headless Chromium (Debian: apt-get install
chromium). Nothing leaves the machine: TensorBoard listens on loopback only and Chromium's background networking
is off.
"""

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

DASHBOARDS = ("custom_scalars", "scalars", "images", "text", "hparams")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(logdir: Path, port: int, samples: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
               "--port", str(port), "--samples_per_plugin", samples]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=2).read()
            return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise SystemExit(f"TensorBoard did not start serving {logdir} within 60 s")


def screenshot(browser: str, url: str, path: Path, size: str, wait_ms: int) -> None:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={profile}", f"--window-size={size}", f"--virtual-time-budget={wait_ms}",
                        f"--screenshot={path}", url], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=180)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logdir", type=Path, help="a run folder, a sweep folder or outputs/")
    parser.add_argument("--out", type=Path, default=Path("screenshots"), help="where the PNGs go")
    parser.add_argument("--dashboards", nargs="+", default=list(DASHBOARDS), choices=DASHBOARDS)
    parser.add_argument("--size", default="1600,1200", help="window width,height in pixels")
    parser.add_argument("--wait-ms", type=int, default=20000, help="virtual time to let the page render")
    parser.add_argument("--samples", default="images=100", help="TensorBoard's --samples_per_plugin")
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        raise SystemExit("No Chromium found: apt-get install chromium (Debian) or put chromium on the PATH.")
    if not args.logdir.is_dir():
        raise SystemExit(f"{args.logdir} is not a folder of runs.")
    args.out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = serve(args.logdir, port, args.samples)
    try:
        for dashboard in args.dashboards:
            path = args.out / f"{dashboard}.png"
            screenshot(browser, f"http://127.0.0.1:{port}/#{dashboard}", path.resolve(), args.size, args.wait_ms)
            print(path)
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
