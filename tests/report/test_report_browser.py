"""Reports of a single-run study, a 3-seed study and a 2-D sweep: tables with rows, images
that decode, and a page a real headless Chromium renders with visible figures.

The browser part needs Chromium from the system packages (``apt-get install chromium``;
``.ci/run`` installs it when it can) and skips visibly without it.
"""

from __future__ import annotations

import base64
import io
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib import image as mpimg

from decent.config import loads_config
from decent.report import write_report
from decent.results import Store
from decent.run import run_sweep

BASE = """
rounds = 30
eval_every = 10
[topology]
kind = "ring"
num_nodes = 8
[algorithm]
kind = "dsgd"
lr = 0.05
[task]
kind = "least_squares"
dim = 4
heterogeneity = 1.0
"""
STUDIES = {
    "single": "",
    "seeds": "[sweep]\nseeds = [0, 1, 2]\n",
    "sweep2d": (
        "[sweep]\nseeds = [0, 1]\n[sweep.grid]\n"
        'topology = [{kind = "ring", num_nodes = 8}, {kind = "exponential", num_nodes = 8}]\n'
        'algorithm = [{kind = "dsgd", lr = 0.05}, {kind = "dat_sgd", lr = 0.002}]\n'
    ),
}
CONFIGURATIONS = {"single": 1, "seeds": 1, "sweep2d": 4}


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("reports")
    paths = {}
    for study, extra in STUDIES.items():
        cfg = loads_config(BASE + extra, study=study)
        summary = run_sweep(cfg, out, workers=1, progress=False)
        assert summary.ok
        with Store(out, readonly=True) as store:
            paths[study] = write_report(store, study, out / "report" / study)
    return paths


def _images(html: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]


@pytest.mark.parametrize("study", list(STUDIES))
def test_every_configuration_has_a_row_with_values(study: str, reports: dict[str, Path]) -> None:
    html = reports[study].read_text()
    rows = re.findall(r'<tr class="final-row">(.*?)</tr>', html, flags=re.S)
    assert len(rows) == CONFIGURATIONS[study]
    for row in rows:
        numbers = re.findall(r'<td class="num"[^>]*>([^<]*)</td>', row)
        assert numbers and all(n.strip() not in ("", "—") for n in numbers), row


@pytest.mark.parametrize("study", list(STUDIES))
def test_the_answer_comes_first_with_a_ranked_row_per_configuration(
    study: str, reports: dict[str, Path]
) -> None:
    html = reports[study].read_text()
    assert html.index('id="answer"') < html.index("Final metrics per configuration")
    rows = re.findall(r'<tr class="headline-row[^"]*">(.*?)</tr>', html, flags=re.S)
    assert len(rows) == CONFIGURATIONS[study]
    assert "ranked by" in html and "f(x̄) − f*" in html  # the task's objective, recorded
    assert all(re.search(r'<td class="num" data-v="[^"]+">\d', r) for r in rows)


@pytest.mark.parametrize("study", list(STUDIES))
def test_every_figure_decodes_with_a_size(study: str, reports: dict[str, Path]) -> None:
    images = _images(reports[study].read_text())
    assert images
    for png in images:
        pixels = mpimg.imread(io.BytesIO(png), format="png")
        assert pixels.shape[0] > 50 and pixels.shape[1] > 50
        assert pixels[..., :3].std() > 0.01  # not a blank canvas


def _chromium() -> str | None:
    return next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser")) if p), None)


@pytest.mark.parametrize("study", list(STUDIES))
def test_a_real_browser_renders_the_figures(
    study: str, reports: dict[str, Path], tmp_path: Path
) -> None:
    browser = _chromium()
    if browser is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    shot = tmp_path / f"{study}.png"
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--disable-quic",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--window-size=1280,2400",
        f"--screenshot={shot}",
        reports[study].as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.is_file(), proc.stderr[-2000:]
    pixels = mpimg.imread(shot)[..., :3]
    ink = (pixels.mean(axis=2) < 0.9).mean()  # share of pixels that are not near-white
    colour = (np.ptp(pixels, axis=2) > 0.2).mean()  # share of coloured pixels (plot lines)
    assert ink > 0.02, f"the rendered page is almost blank ({ink:.3%} ink)"
    assert colour > 0.001, f"no coloured figure content rendered ({colour:.3%})"
    keep = Path(__file__).parent / "screenshots"
    if keep.is_dir():  # a local run can keep the screenshots to look at them
        shutil.copy(shot, keep / shot.name)
