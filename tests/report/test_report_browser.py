"""Reports of a single-run study, a 3-seed study, a 2-D sweep and a study with its own
answer: tables with rows, images that decode, a page a real headless Chromium renders with
visible figures, and a first screen (as laid out by Chromium) that holds the answer.

The browser part needs Chromium from the system packages (``apt-get install chromium``;
``.ci/run`` installs it when it can) and skips visibly without it.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib import image as mpimg

from decent.config import loads_config
from decent.report import plot_metric, report_figures, write_report
from decent.report._html import MIN_POINTS, points
from decent.results import Store, load
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
FOLD = 900
"""The first screen: what a 1280 x 900 window shows before any scrolling."""


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
    paths["own_answer"] = _own_answer(out)
    return paths


def _own_answer(out: Path) -> Path:
    """The 2-D sweep reported as a study with its own answer: a sentence, a compact table
    (bytes as the store recorded them), a full table to fold, a figure of every round and
    one of two points (which must not be drawn)."""
    df = load(out, "sweep2d")
    last = df[(df["metric"] == "comm/bytes_per_node_mean") & (df["round"] == df["round"].max())]
    sent = last.groupby(["algorithm.kind", "topology.kind"])["value"].mean()
    compact = pd.DataFrame(
        [
            {"method": m, "graph": g, "bytes / node": float(v), "× best": 1.0 + i / 3}
            for i, ((m, g), v) in enumerate(sent.items())
        ]
    )
    two = df[df["round"].isin([0, df["round"].max()])]  # two points per line
    with Store(out, readonly=True) as store:
        return write_report(
            store,
            "sweep2d",
            out / "report" / "own_answer",
            answer="D-SGD sends the fewest bytes per node on every graph.",
            lead_table=compact,
            full_table=pd.concat([compact] * 10, ignore_index=True),
            lead=[
                ("loss per round", plot_metric(df, "eval/loss@mean")),
                ("loss at two rounds", plot_metric(two, "eval/loss@mean")),
            ],
            figures=False,
        )


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


PROBE = """
<script>
(function () {
  function box(el) { if (!el) return null; var r = el.getBoundingClientRect();
    return {top: r.top + scrollY, bottom: r.bottom + scrollY, left: r.left, right: r.right}; }
  var answer = [], node = document.getElementById('answer').nextElementSibling;
  var first = node ? box(node) : null;
  var out = {
    sentence: box(document.querySelector('p.sentence')),
    sentence_text: (document.querySelector('p.sentence') || {}).textContent || '',
    table: box(document.querySelector('table.headline')),
    first: first,
    folded: Array.from(document.querySelectorAll('details:not([open])')).map(function (d) {
      return d.querySelector('summary').textContent; }),
    images: Array.from(document.images).map(function (i) {
      return {top: box(i).top, width: i.naturalWidth, height: i.naturalHeight,
              shown: i.getBoundingClientRect().width}; }),
    text: document.body.innerText.split('Final metrics per configuration')[0]
  };
  var pre = document.createElement('pre'); pre.id = 'probe';
  pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
})();
</script>
"""
"""Measures the page as Chromium laid it out: where the sentence, the headline table and
the figures are, what is folded, and the text above the full tables."""


def _layout(page: Path, tmp_path: Path) -> dict[str, object]:
    browser = _chromium()
    if browser is None:
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    probe = tmp_path / "probe.html"
    probe.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--window-size=1280,{FOLD}",
        "--virtual-time-budget=5000",
        "--dump-dom",
        probe.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    found = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, flags=re.S)
    assert found, proc.stderr[-2000:]
    import html

    return dict(json.loads(html.unescape(found.group(1))))


SCIENTIFIC = re.compile(r"\d\.\d+e[+-]?\d+")
UNITS = re.compile(r"^\d[\d.]* (B|KiB|MiB|GiB)$")


@pytest.mark.parametrize("study", [*STUDIES, "own_answer"])
def test_the_first_screen_holds_the_answer(
    study: str, reports: dict[str, Path], tmp_path: Path
) -> None:
    page = _layout(reports[study], tmp_path)
    sentence, table = page["sentence"], page["table"]
    assert isinstance(sentence, dict) and isinstance(table, dict), page
    # the one-sentence answer and the headline table start on the first screen
    assert sentence["bottom"] < FOLD and table["top"] < FOLD, (sentence, table)
    assert sentence["top"] < table["top"]
    assert len(str(page["sentence_text"]).split(". ")) <= 2  # one sentence (maybe two)
    # numbers a person reads: no raw scientific notation for sizes, no tuning knobs as axes
    text = str(page["text"])
    assert not re.search(r"\d\.\d+e\+\d+", text), "raw scientific notation (e+) above"
    assert "eval_every:" not in text and "eval_every (" not in text
    html_text = reports[study].read_text()
    sizes = re.findall(r'<td class="num" data-v="[^"]+">([^<]*(?:B|iB))</td>', html_text)
    parts = [p for s in sizes for p in s.split(" ± ")]  # mean ± std, each a size
    assert parts and all(UNITS.match(p) for p in parts), sizes[:5]
    for mantissa in SCIENTIFIC.findall(text):  # 3 significant digits where it is used
        assert len(mantissa.split("e")[0].replace(".", "").lstrip("0")) <= 3, mantissa
    # every figure is drawn at a size, and nothing is cut at its edges
    images = page["images"]
    assert isinstance(images, list) and images
    for png in _images(html_text):
        pixels = mpimg.imread(io.BytesIO(png), format="png")[..., :3]
        edge = np.concatenate([pixels[:3].reshape(-1, 3), pixels[:, :3].reshape(-1, 3)])
        assert edge.min() > 0.8, "ink at the top or left edge: a title or label is cut off"
    if study == "own_answer":
        assert "Full table (40 rows)" in page["folded"]  # type: ignore[operator]
        assert "loss at two rounds: fewer than 3 points (not drawn" in text
        assert len(images) == 1


@pytest.mark.parametrize("study", list(STUDIES))
def test_no_generic_figure_has_fewer_than_three_points(
    study: str, reports: dict[str, Path]
) -> None:
    out = reports[study].parents[2]
    df = load(out, study)
    figs = report_figures(df, "algorithm.kind", "topology.kind")
    assert figs
    assert all(points(fig) >= MIN_POINTS for _, fig in figs)


def test_runs_record_their_method_label_for_the_report(reports: dict[str, Path]) -> None:
    from decent.algorithms import ALGORITHMS

    with Store(reports["sweep2d"].parents[2], readonly=True) as store:
        runs = store.runs("sweep2d")
    for _, r in runs.iterrows():
        cls = ALGORITHMS[r["algorithm.kind"]]
        assert r["info.method.label"] == cls.label
        assert r["info.method.centralized"] is cls.centralized
