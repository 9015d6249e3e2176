"""Screenshots of TensorBoard for a folder of runs, as a user sees them at TensorBoard's defaults: the diagnose tab
and TensorBoard's own dashboards, each page whole (the window made as tall as what it shows).

    python scripts/screenshots.py outputs/multirun/2026-11-30/10-00-00 --out shots/
    python scripts/screenshots.py outputs --targets all --dashboards diagnose

starts `tensorboard --logdir FOLDER` on a free port of 127.0.0.1 with TensorBoard's default settings (10 images a
tag, smoothing 0.6, outliers ignored), waits until it serves, and saves one PNG per dashboard, and for the diagnose
tab one per run, probe or sweep asked for (`--targets`: the one it opens on, `all`, or their ids), taken with
headless Chromium (Debian: apt-get install chromium) driven by playwright (`pip install playwright`: it drives the
system's Chromium, no browser is downloaded). Without playwright, Chromium's own --screenshot takes each dashboard
at the window size given, and the tab at the run it opens on. Nothing leaves the machine: TensorBoard listens on
loopback only and Chromium's background networking is off.
"""

import argparse
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

DASHBOARDS = ("diagnose", "custom_scalars", "scalars", "images", "text", "hparams")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TALLEST = 16000  # pixels: a page taller than this is cut (Chromium's own limit on a screenshot is ~16384)
# The tallest scrolling thing on the page, through TensorBoard's shadow roots, and where it starts: what a window
# must hold to show the page whole. The diagnose tab's frame is measured by its own document.
PAGE_HEIGHT = """() => {
  let most = document.documentElement.scrollHeight;
  const walk = root => {
    for (const element of root.querySelectorAll("*")) {
      if (element.scrollHeight > element.clientHeight + 2) {
        most = Math.max(most, element.scrollHeight + element.getBoundingClientRect().top);
      }
      if (element.shadowRoot) walk(element.shadowRoot);
    }
  };
  walk(document);
  return Math.ceil(most);
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(logdir: Path, port: int, samples: str | None) -> subprocess.Popen:
    command = [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir), "--host", "127.0.0.1",
               "--port", str(port), *(["--samples_per_plugin", samples] if samples else [])]
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


def slug(target: str) -> str:
    return re.sub(r"[^A-Za-z0-9=.,_-]+", "_", target).strip("_") or "logdir"


def with_playwright(browser: str, base: str, dashboards: list[str], out: Path, width: int, height: int,
                    wait_ms: int, targets: list[str]) -> list[Path]:
    from playwright.sync_api import sync_playwright

    saved = []
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=browser, args=CHROMIUM_FLAGS[1:])
        page = chromium.new_page(viewport={"width": width, "height": height})
        for dashboard in dashboards:
            page.set_viewport_size({"width": width, "height": height})
            page.goto(f"{base}/#{dashboard}")
            if dashboard != "diagnose":
                page.wait_for_timeout(wait_ms)
                saved.append(whole(page, out / f"{dashboard}.png", width, wait_ms))
                continue
            frame = page.wait_for_selector("iframe", timeout=60_000).content_frame()
            frame.wait_for_selector("body[data-drawn]", timeout=60_000)
            opened = frame.eval_on_selector("#target", "select => select.value")
            ids = frame.eval_on_selector("#target", "select => [...select.options].map(o => o.value)")
            for target in ids if targets == ["all"] else targets or [opened]:
                if target not in ids:
                    raise SystemExit(f"the tab lists no {target!r}; it lists: {', '.join(ids)}")
                page.set_viewport_size({"width": width, "height": height})
                frame.select_option("#target", target)
                frame.wait_for_function(f"document.body.dataset.drawn === {target!r}", timeout=60_000)
                name = "diagnose.png" if target == opened and targets != ["all"] else f"diagnose-{slug(target)}.png"
                for _ in range(4):  # the frame's page reflows at the new size: grow until it fits
                    top = page.eval_on_selector("iframe", "frame => frame.getBoundingClientRect().top")
                    tall = min(TALLEST, int(top + frame.evaluate("document.documentElement.scrollHeight")) + 8)
                    if tall <= page.viewport_size["height"]:
                        break
                    page.set_viewport_size({"width": width, "height": tall})
                    page.wait_for_timeout(500)  # the charts take the frame's new size
                page.screenshot(path=str(out / name))
                saved.append(out / name)
        chromium.close()
    return saved


def whole(page: object, path: Path, width: int, wait_ms: int) -> Path:
    """The window grown until the page fits (TensorBoard draws a chart only once it is in view), then the shot."""
    for _ in range(4):
        needed = min(TALLEST, page.evaluate(PAGE_HEIGHT))
        if needed <= page.viewport_size["height"]:
            break
        page.set_viewport_size({"width": width, "height": needed})
        page.wait_for_timeout(max(wait_ms // 2, 1000))
    page.screenshot(path=str(path))
    return path


def with_chromium(browser: str, base: str, dashboards: list[str], out: Path, size: str, wait_ms: int) -> list[Path]:
    saved = []
    for dashboard in dashboards:
        path = (out / f"{dashboard}.png").resolve()
        with tempfile.TemporaryDirectory() as profile:
            subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--window-size={size}",
                            f"--virtual-time-budget={wait_ms}", f"--screenshot={path}", f"{base}/#{dashboard}"],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=180)
        saved.append(path)
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("logdir", type=Path, help="a run folder, a sweep folder or outputs/")
    parser.add_argument("--out", type=Path, default=Path("screenshots"), help="where the PNGs go")
    parser.add_argument("--dashboards", nargs="+", default=list(DASHBOARDS), choices=DASHBOARDS)
    parser.add_argument("--targets", nargs="+", default=[],
                        help="the diagnose tab's runs, probes or sweeps to shoot, by id (folder under the logdir), "
                             "or `all`; default: the one it opens on")
    parser.add_argument("--size", default="1600,1200", help="window width,height in pixels (grown to fit a page)")
    parser.add_argument("--wait-ms", type=int, default=8000, help="time to let a dashboard render")
    parser.add_argument("--samples", default=None,
                        help="TensorBoard's --samples_per_plugin (default: its own, 10 images a tag)")
    parser.add_argument("--no-playwright", action="store_true", help="Chromium's own --screenshot, one window each")
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        raise SystemExit("No Chromium found: apt-get install chromium (Debian) or put chromium on the PATH.")
    if not args.logdir.is_dir():
        raise SystemExit(f"{args.logdir} is not a folder of runs.")
    try:
        import playwright  # noqa: F401
        playwright_there = not args.no_playwright
    except ImportError:
        playwright_there = False
    args.out.mkdir(parents=True, exist_ok=True)
    width, height = (int(v) for v in args.size.split(","))
    port = free_port()
    server = serve(args.logdir, port, args.samples)
    base = f"http://127.0.0.1:{port}"
    try:
        if playwright_there:
            saved = with_playwright(browser, base, args.dashboards, args.out, width, height, args.wait_ms,
                                    args.targets)
        else:
            saved = with_chromium(browser, base, args.dashboards, args.out, args.size, args.wait_ms * 2)
        for path in saved:
            print(path)
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
