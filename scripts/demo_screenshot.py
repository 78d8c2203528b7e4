"""Drive the demo in a real browser, as a user would, and keep what the page showed.

    python scripts/demo_screenshot.py CKPT OUT_DIR [--class 3] [--n 4] [--seed 0] [--chromium PATH]

Starts ``python demo.py ckpt=CKPT`` on a free loopback port and drives it with Playwright in Chromium
(launched from ``--chromium``, default the ``chromium`` on PATH, as Debian's package installs it):

1. **generate**: one class (or ``--class "every class"``), ``--n`` images per row, ``--seed``; the grid the
   page received is saved as ``generated.png``, the page as ``demo_generate.png``;
2. **a bad value**: steps set to 0; the error the page shows is recorded, the page saved as
   ``demo_error.png``; steps set back and the next seed drawn (``generated_again.png``): the server keeps
   serving;
3. **edit**: a 7 drawn with the mouse on the sketchpad, redrawn image-to-image as a 7 (``edited.png``,
   ``demo_edit.png``).

``report.json`` holds each step's settings and what the page said. The docs' screenshots are this script's
``demo_*.png`` for the main job's checkpoint; ``tests/integration/test_demo.py`` runs it on the smoke model
and checks the images against the pipeline's for the same settings.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
#: the 7 the edit step draws: strokes through these points, as fractions of the sketchpad's canvas
SEVEN = [(0.40, 0.25), (0.60, 0.25), (0.45, 0.80)]
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ckpt", help="a stage-2 .ckpt or a model folder")
    parser.add_argument("out", type=Path, help="the folder to write the screenshots, images and report.json into")
    parser.add_argument("--class", dest="condition", default="3", help='a class, or "every class"')
    parser.add_argument("--n", type=int, default=4, help="images per row")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"))
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the server and each step")
    args = parser.parse_args(argv)
    if not args.chromium or not Path(args.chromium).is_file():
        parser.error("no Chromium found: apt-get install chromium, or pass --chromium PATH")
    if not Path(args.ckpt).exists():
        parser.error(f"ckpt {args.ckpt!r} does not exist")
    args.out.mkdir(parents=True, exist_ok=True)

    port = _free_port()
    url = f"http://127.0.0.1:{port}/"
    log = (args.out / "demo.log").open("w")
    command = [sys.executable, str(REPO / "demo.py"), f"ckpt={args.ckpt}", f"port={port}", "host=127.0.0.1"]
    command.append(f"hydra.run.dir={args.out / 'demo_run'}")
    server = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, env=_env())
    try:
        _wait_until_served(url, server, args.timeout, args.out / "demo.log")
        report = _drive(url, args)
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
    (args.out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


def _drive(url: str, args: argparse.Namespace) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    timeout_ms = args.timeout * 1000
    report: dict[str, Any] = {"url": url}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(timeout_ms)
        page.goto(url, wait_until="networkidle")

        # 1. generate
        _choose(page, "#condition-class", args.condition)
        page.locator("#n input[type=number]").fill(str(args.n))
        page.locator("#seed input").fill(str(args.seed))
        steps = page.locator("#steps input").input_value()
        report["generate"] = {"class": args.condition, "n": args.n, "seed": args.seed, "steps": int(float(steps))}
        report["generate"]["caption"] = _run(page, "#generate", "#samples", "#caption", args.out / "generated.png")
        page.screenshot(path=str(args.out / "demo_generate.png"), full_page=True)

        # 2. a bad value: the page shows the project's message, and the server keeps serving
        page.locator("#steps input").fill("0")
        page.locator("#generate").click()
        toast = page.get_by_test_id("toast-text").first
        toast.wait_for()
        report["error"] = toast.inner_text()
        page.screenshot(path=str(args.out / "demo_error.png"), full_page=True)
        page.get_by_test_id("toast-close").first.click()
        page.locator("#steps input").fill(steps)
        page.locator("#seed input").fill(str(args.seed + 1))  # the next seed: new images, so a new grid shows
        report["again"] = {**report["generate"], "seed": args.seed + 1}
        report["again"]["caption"] = _run(page, "#generate", "#samples", "#caption", args.out / "generated_again.png")

        # 3. edit a drawing
        page.get_by_role("tab", name="Edit").click()
        page.locator("#drawing").get_by_role("button", name="Brush", exact=True).click()
        box = page.locator("#drawing canvas").first.bounding_box()
        points = [(box["x"] + box["width"] * x, box["y"] + box["height"] * y) for x, y in SEVEN]
        page.mouse.move(*points[0])
        page.mouse.down()
        for point in points[1:]:
            page.mouse.move(*point, steps=15)
        page.mouse.up()
        _choose(page, "#target-class", "7")
        report["edit"] = {"mode": "image-to-image", "class": 7, "strength": 0.6, "n": 4, "seed": 0}
        report["edit"]["caption"] = _run(page, "#edit", "#edited", "#edit-caption", args.out / "edited.png")
        page.screenshot(path=str(args.out / "demo_edit.png"), full_page=True)
        browser.close()
    return report


def _run(page: Any, button: str, image: str, caption: str, out: Path) -> str:
    """Click ``button``; wait for a new image in ``image``; save the PNG the page received; return the caption."""
    old = page.locator(f"{image} img").get_attribute("src") if page.locator(f"{image} img").count() else None
    page.locator(button).click()
    page.wait_for_function(
        "([selector, old]) => { const img = document.querySelector(selector + ' img');"
        " return img && img.complete && img.naturalWidth > 0 && img.src !== old; }",
        arg=[image, old],
    )
    source = page.locator(f"{image} img").get_attribute("src")
    out.write_bytes(page.request.get(source).body())
    page.wait_for_timeout(1000)  # the page's fade-in of a finished result, so a screenshot shows it settled
    return page.locator(caption).inner_text()


def _choose(page: Any, dropdown: str, option: str) -> None:
    page.locator(f"{dropdown} input").click()
    page.get_by_role("option", name=option, exact=True).click()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _env() -> dict[str, str]:
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _wait_until_served(url: str, server: subprocess.Popen, timeout: float, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the demo exited ({server.returncode}) before serving:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"the demo did not serve {url} within {timeout:g} s:\n{log.read_text()[-3000:]}")


if __name__ == "__main__":
    raise SystemExit(main())
