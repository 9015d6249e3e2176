"""How fast the diagnose tab draws a 60-run sweep.

    python benchmarks/tab.py                  # makes the sweep first (~2-4 minutes on 2 cores), in a temp folder
    python benchmarks/tab.py --sweep FOLDER   # a sweep you have

The sweep: small MLPs on synthetic data, norm=bn,gn x batch=2,4,8,16,32 x seed=0..5, 60 steps each with the default
diagnostics (so every job has per-layer statistics, the depth profile's heaviest case). TensorBoard serves it on
127.0.0.1; headless Chromium (playwright driving the system's chromium) opens the tab, and each round selects a job,
then the sweep, and reads how long the page took from asking for the sweep to every chart drawn: the routes'
answers (fetch) and the drawing apart. Each route is also timed on its own over HTTP. Medians over the rounds,
after one round that lets TensorBoard load the event files.
"""

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

SWEEP = ["train", "-m", "hydra/launcher=local", "data=synthetic", "data.size=8", "data.train_count=512",
         "data.val_size=64", "data.test_count=64", "model=mlp", "model.depth=3", "model.width=32", "steps=60",
         "norm=bn,gn", "batch=2,4,8,16,32", "seed=0,1,2,3,4,5", "device=cpu"]
ROUTES = ("targets", "findings", "depth", "batch", "steps")


def make_sweep(where: Path) -> Path:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "diagnose", *SWEEP], cwd=where, check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    (sweep,) = (where / "outputs" / "multirun").glob("*/*")
    print(f"made {len(list(sweep.glob('*/metrics.json')))} jobs in {time.perf_counter() - started:.0f} s: {sweep}")
    return sweep


def serve(logdir: Path) -> tuple[subprocess.Popen, str]:
    server = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host",
                               "127.0.0.1", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
    for line in server.stdout:
        if match := re.search(r"(http://127\.0\.0\.1:\d+)/", line):
            return server, match.group(1)
    raise SystemExit("tensorboard did not start")


def route_ms(base: str, route: str) -> float:
    started = time.perf_counter()
    with urllib.request.urlopen(f"{base}/data/plugin/diagnose/{route}?target=.", timeout=120) as response:
        response.read()
    return (time.perf_counter() - started) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sweep", type=Path, help="a sweep folder (default: make one)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    temp = Path(tempfile.mkdtemp()) if args.sweep is None else None
    sweep = args.sweep or make_sweep(temp)
    jobs = len(list(sweep.glob("*/metrics.json")))
    server, base = serve(sweep)
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=shutil.which("chromium"),
                                                 args=["--no-sandbox", "--disable-gpu"])
            page = browser.new_page(viewport={"width": 1600, "height": 1200})
            page.goto(f"{base}/#diagnose")
            frame = page.wait_for_selector("iframe", timeout=120_000).content_frame()
            frame.wait_for_selector("body[data-drawn]", timeout=120_000)
            job = frame.eval_on_selector("#target", "select => select.options[1].value")
            rounds = []
            for _ in range(args.rounds + 1):
                for target in (job, "."):
                    frame.select_option("#target", target)
                    frame.wait_for_function(f"document.body.dataset.drawn === {target!r}", timeout=120_000)
                rounds.append(frame.evaluate("() => [window.diagnose.fetchMs, window.diagnose.drawnMs, "
                                             "window.diagnose.charts.length, window.diagnose.charts.reduce("
                                             "(n, c) => n + c.u.series.length - 1, 0)]"))
            browser.close()
        routes = {route: statistics.median(route_ms(base, route) for _ in range(args.rounds)) for route in ROUTES}
    finally:
        server.terminate()
        server.wait(timeout=30)
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)
    fetch, total, charts, series = (statistics.median(r[i] for r in rounds[1:]) for i in range(4))
    print(f"a {jobs}-job sweep: {charts:.0f} charts, {series:.0f} series; median of {args.rounds} rounds")
    print(f"| asked to drawn | routes' answers | drawing |\n|---|---|---|\n"
          f"| {total:.0f} ms | {fetch:.0f} ms | {total - fetch:.0f} ms |")
    print("each route alone (ms): " + ", ".join(f"{route} {ms:.0f}" for route, ms in routes.items()))


if __name__ == "__main__":
    main()
