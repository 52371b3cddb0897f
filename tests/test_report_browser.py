"""Render the report's HTML page in headless Chromium: the plots decode, nothing is fetched, data stays text.

Chromium comes from Debian's packages (``apt-get install -y chromium``); without it these tests skip.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess

import numpy as np
import pytest

from r2rec.report import write_report
from r2rec.report.plots import R2REC_COLOR
from test_report import NASTY, make_run

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not found (install it with: apt-get install -y chromium)"
)

# After the load event, record what the browser made of the page into a <pre id="probe"> that --dump-dom
# prints: each image's decoded size, every resource fetched, and whether data turned into markup.
PROBE = """<script>
window.addEventListener("load", () => {
  const probe = {
    images: [...document.images].map(i => ({plot: i.closest("figure") && i.closest("figure").dataset.plot,
                                            complete: i.complete, width: i.naturalWidth, height: i.naturalHeight})),
    resources: performance.getEntriesByType("resource").map(e => e.name),
    injected: document.querySelectorAll("b.inj").length,
    scripts: document.scripts.length,
    visible: document.body.innerText,
    text: document.body.textContent,
  };
  const pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(probe);
  document.body.appendChild(pre);
});
</script>"""


def _chromium(tmp_path, *args: str) -> str:
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--host-resolver-rules=MAP * ~NOTFOUND",  # no name resolves: offline
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        *args,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"chromium failed ({proc.returncode}): {proc.stderr[-2000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    paths = write_report(make_run(tmp / "run"), n_boot=100)
    return tmp, paths


def test_plots_render_with_real_pixels_and_nothing_is_fetched(page):
    tmp, paths = page
    text = paths["html"].read_text()
    assert text.count("</body>") == 1
    probed = tmp / "probed.html"
    probed.write_text(text.replace("</body>", PROBE + "</body>"))
    dom = _chromium(tmp, "--virtual-time-budget=10000", "--dump-dom", probed.as_uri())
    m = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert m, f"probe missing from the dumped DOM: {dom[:500]}"
    probe = json.loads(html.unescape(m.group(1)))

    by_plot = {i["plot"]: i for i in probe["images"]}
    assert set(by_plot) == {p.stem for p in paths["plots"]}
    want = {"run-synthetic-test-hr1", "run-sft-loss", "run-grpo-reward", "run-synthetic-test-faithfulness"}
    assert want <= set(by_plot)
    from PIL import Image

    for p in paths["plots"]:
        img = by_plot[p.stem]
        # Decoded by the browser at the PNG's own size: the data URI is a complete, valid image.
        assert img["complete"] and (img["width"], img["height"]) == Image.open(p).size, img
        assert img["width"] > 100 and img["height"] > 100
    # Self-contained: the page fetched no resource at all (data: URIs are not fetches).
    assert probe["resources"] == []
    # Titles with markup are shown as text: no element was created from them, and only the probe script runs.
    assert probe["injected"] == 0 and probe["scripts"] == 1
    assert NASTY in probe["visible"]
    # The teacher examples sit in a closed <details>: present as text, not rendered until opened.
    assert "<script>alert('x')</script> & done" in probe["text"]


def test_screenshot_shows_the_hr1_chart(page):
    tmp, paths = page
    shot = tmp / "shot.png"
    _chromium(tmp, "--window-size=1200,2400", "--hide-scrollbars", f"--screenshot={shot}", paths["html"].as_uri())
    from PIL import Image

    px = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert px.shape[:2] == (2400, 1200)
    assert px.std() > 10, "blank screenshot"
    # R2Rec's bar in the HR@1 chart is the only large area of this red on the page.
    red = np.array([int(R2REC_COLOR[i : i + 2], 16) for i in (1, 3, 5)])
    near = (np.abs(px - red).sum(-1) < 30).sum()
    assert near > 500, f"only {near} pixels of the R2Rec bar colour: the HR@1 plot did not render"


def test_probe_catches_a_broken_plot_and_a_fetch(page):
    """Negative control: the checks above can fail. A corrupted data URI decodes to width 0, and a remote
    image shows up as a fetched resource."""
    tmp, paths = page
    text = paths["html"].read_text()
    broken = re.sub(r"base64,[^\"]+", "base64,AAAAAAAA", text, count=1)
    broken = broken.replace("</main>", '<img src="http://example.invalid/x.png"></main>')
    probed = tmp / "broken.html"
    probed.write_text(broken.replace("</body>", PROBE + "</body>"))
    dom = _chromium(tmp, "--virtual-time-budget=10000", "--dump-dom", probed.as_uri())
    probe = json.loads(html.unescape(re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S).group(1)))
    assert probe["images"][0]["width"] == 0
    assert any(r.startswith("http://example.invalid") for r in probe["resources"])
