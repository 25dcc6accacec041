"""The data card renders from plain numbers (no Spark): self-contained HTML, a Markdown twin with the
same facts, the simulator notice when the endpoint was the simulator, escaping of data-borne text,
and one screenshot in headless Chromium that fails if the page does not render."""

from __future__ import annotations

import base64
import html
import io
import os
import re
import shutil
import subprocess

import pytest
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

from jobs.datacard import (FILTER_ALONE_LABEL, FILTER_ALONE_SQL, SIMULATOR_NOTICE, CardData, LLMStageStats, SampleRow,
                           TaskFunnel, cut_text, family_funnel, render_html, render_markdown, render_plots, task_funnel,
                           verification_meaning, write_card)
from jobs.progress import plural


def sample_card(**changes) -> CardData:
    """A card shaped like the demo run's: three families, every section populated."""
    data = CardData(
        dataset="curated", table="taskseed.curated", delta_version=3, rows=83,
        created_at="2026-11-30T16:00:00Z", code_version="0.1.0+abc1234", config_fingerprint="0123456789abcdef",
        endpoint="simulator", simulated=True,
        models={"generation": ["taskseed-sim"], "enrichment": ["taskseed-sim"]},
        prompt_versions=["generate/mcq/v3-1a2b", "enrich/numeric/v2-9f9f"],
        input_versions={"curated": 3, "filter_decisions": 2, "seeds": 1, "llm_calls": 4},
        files=[{"path": "jsonl/part-00000.jsonl", "format": "jsonl", "rows": 83},
               {"path": "parquet/part-00000.parquet", "format": "parquet", "rows": 83}],
        funnel=[("candidates", 120), ("validation", 117), ("verification", 101), ("exact_dup", 97),
                ("near_dup", 90), ("contamination", 83)],
        rejected={"validation": 3, "verification": 16, "exact_dup": 5, "near_dup": 9, "contamination": 7,
                  "license": 40},
        rejected_alone={"validation": 2, "verification": 14, "exact_dup": 5, "near_dup": 6, "contamination": 7},
        reasons={"validation": {"answer_not_in_choices": 2, "template_marker": 1},
                 "verification": {"majority_disagrees": 12, "tie": 4},
                 "contamination": {"heldout_ngram": 5, "heldout_whole_text": 2},
                 "license": {"unknown_license": 40}},
        not_checked={},
        rows_per_family={"arc": 30, "gsm8k": 25, "boolq": 28},
        rows_per_format={"mcq": 30, "numeric": 25, "boolean": 28},
        lengths={"passage + question": [40 + 7 * i for i in range(83)], "answer": [3 + i % 20 for i in range(83)],
                 "document": [300 + 11 * i for i in range(83)]},
        length_sample=83,
        agreement=[0.75] * 40 + [1.0] * 43,
        verification_reasons={"majority_agrees": 101, "majority_disagrees": 12, "tie": 4, "no_valid_votes": 3},
        contamination=[("mmlu", "ngram", 5), ("sciq", "whole_text", 2)],
        near_dup_components={1: 80, 2: 6, 3: 1},
        near_dup_of_seed=2,
        license_mix=[("cc-by-sa-4.0", "share-alike", "yes", 30), ("mit", "permissive", "yes", 25),
                     ("unknown", "unknown", "unknown", 28)],
        quarantine=[("generate", "truncated_json", 2), ("enrich", "answer_not_in_choices", 5)],
        llm_failures=[("enrich", "http_503", 1)],
        llm=[LLMStageStats("generate", "taskseed-sim", 120, 118, 2, 0, 60_000, 24_000, 21.0, 29.5, 33.0),
             LLMStageStats("enrich", "taskseed-sim", 480, 470, 9, 1, 190_000, 95_000, 20.0, 28.0, 31.9)],
        task_funnel=[TaskFunnel("arc_easy", "arc", 20, 40, 1, 39, 156, 3, 39, 39, 30),
                     TaskFunnel("boolq", "boolq", 20, 40, 1, 39, 156, 1, 39, 39, 28),
                     TaskFunnel("gsm8k", "gsm8k", 20, 40, 0, 40, 160, 1, 40, 40, 25)],
        samples_published=[SampleRow("0a1b2c3d4e5f6789", "gsm8k", "Tom has 3 apples and buys 4 more. How many?", "7")],
        samples_rejected=[SampleRow("00ff00ff00ff00ff", "boolq", "is the sky green", "yes", "verification",
                                    "majority_disagrees", '{"votes": [false, false]}')],
        samples_per_item=4,
    )
    for key, value in changes.items():
        setattr(data, key, value)
    return data


def test_html_is_self_contained_and_embeds_every_plot_as_png():
    data = sample_card()
    plots = render_plots(data)
    assert set(plots) == {"funnel", "families", "lengths", "agreement", "near_dup", "licenses"}
    page = render_html(data, plots)
    # no network: no external URL in any src/href, no script
    assert not re.search(r"""(src|href)\s*=\s*["'](https?:|//)""", page)
    assert "<script" not in page.lower()
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert len(images) == len(plots)
    for encoded in images:
        assert base64.b64decode(encoded).startswith(b"\x89PNG\r\n\x1a\n")


def test_cards_state_the_facts_a_reviewer_asks_for():
    data = sample_card()
    for text in (html.unescape(render_html(data, render_plots(data))), render_markdown(data, render_plots(data))):
        assert SIMULATOR_NOTICE in text
        for fact in ("taskseed.curated", "0.1.0+abc1234", "0123456789abcdef", "generate/mcq/v3-1a2b",
                     "majority_disagrees", "mmlu", "heldout_ngram", "truncated_json", "http_503",
                     "cc-by-sa-4.0", "60,000", "29.5", "gsm8k"):
            assert fact in text, fact


def test_markdown_links_the_plot_files_and_its_tables_are_well_formed(tmp_path):
    data = sample_card()
    written = write_card(tmp_path, data)
    assert set(written) == {"datacard.html", "datacard.md", *(f"plots/{n}.png" for n in render_plots(data))}
    md = (tmp_path / "datacard.md").read_text()
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (tmp_path / link).is_file(), link
    # every table row has as many cells as its header
    for block in re.findall(r"((?:^\|.*\|\n)+)", md, flags=re.MULTILINE):
        rows = [r for r in block.strip().split("\n")]
        widths = {len(re.findall(r"(?<!\\)\|", r)) for r in rows}
        assert len(widths) == 1, block


def test_a_model_run_says_nothing_about_a_simulator_and_unchecked_filters_are_flagged():
    data = sample_card(simulated=False, endpoint="https://models.example.com/v1",
                       not_checked={"contamination": 120}, contamination=[])
    page = render_html(data, render_plots(data))
    assert "simulator" not in page.lower()
    assert "was not checked for 120 items" in page
    assert "Contamination against held-out benchmarks was <b>not checked</b>" in page


def test_a_disabled_filter_is_said_in_both_cards():
    data = sample_card(disabled={"paraphrase": 97})
    page, md = render_html(data, render_plots(data)), render_markdown(data, render_plots(data))
    assert "<b>paraphrase</b> is disabled by the config for 97 items" in page
    assert "**paraphrase is disabled** by the config for 97 items" in md
    assert "is disabled" not in render_html(sample_card(), render_plots(sample_card()))


def test_text_from_the_data_is_escaped_in_html_and_markdown():
    evil = "<img src=x onerror=alert(1)>|x"
    data = sample_card(rows_per_family={evil: 3}, quarantine=[("enrich", evil, 1)])
    page = render_html(data, render_plots(data))
    assert evil not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    md = render_markdown(data, render_plots(data))
    assert "onerror=alert(1)>\\|x" in md  # the pipe is escaped so the table keeps its columns


def test_an_empty_dataset_renders_without_plots():
    data = sample_card(rows=0, funnel=[("candidates", 0)], rows_per_family={}, rows_per_format={}, lengths={},
                       length_sample=0, agreement=[], near_dup_components={}, license_mix=[], llm=[],
                       quarantine=[], llm_failures=[], contamination=[])
    plots = render_plots(data)
    assert set(plots) <= {"funnel"}
    page = render_html(data, plots)
    assert "nothing quarantined" in page and "no LLM request in the ledger" in page
    assert "No rows." in render_markdown(data, plots)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def test_the_html_card_renders_in_headless_chromium(tmp_path):
    """Render the card to a PNG like a reader's browser: the page must paint text and the embedded
    plots (the funnel's bar colour), and Chromium must log no console error. Skipped only when
    Chromium is absent outside CI (.ci/run installs it)."""
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (CI installs it in .ci/run)")
        pytest.skip("chromium is not installed (apt-get install -y chromium); CI runs this test")
    from matplotlib.image import imread

    write_card(tmp_path, sample_card())
    png = tmp_path / "card.png"
    proc = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0", f"--user-data-dir={tmp_path / 'profile'}",
         f"--screenshot={png}", "--window-size=1280,4000", (tmp_path / "datacard.html").as_uri()],
        capture_output=True, text=True, timeout=120)
    assert png.is_file(), proc.stderr[-2000:]
    assert not re.findall(r"CONSOLE.*(error|Uncaught)", proc.stderr, flags=re.IGNORECASE), proc.stderr[-2000:]
    pixels = imread(png)[:, :, :3]
    height, width, _ = pixels.shape
    assert (height, width) == (4000, 1280)
    ink = (pixels.sum(axis=2) < 1.5).mean()            # dark text and lines
    assert ink > 0.01, f"page looks blank: {ink:.4f} of pixels are dark"
    blue = (abs(pixels - [0x3b / 255, 0x6e / 255, 0xa8 / 255]).max(axis=2) < 0.05).sum()
    assert blue > 2000, f"the embedded plots did not paint ({blue} funnel-blue pixels)"


# ---- issue 29: the card tells the truth about a run -----------------------------------------------

def _texts(data: CardData) -> list[str]:
    plots = render_plots(data)
    return [html.unescape(re.sub(r"<[^>]+>", "", render_html(data, plots))), render_markdown(data, plots)]


@pytest.mark.parametrize("n, word, many, expected", [
    (0, "item", None, "0 items"), (1, "item", None, "1 item"), (2, "item", None, "2 items"),
    (1, "task family", "task families", "1 task family"), (3, "task family", "task families", "3 task families"),
    (12345, "row", None, "12,345 rows"),
])
def test_plural_is_one_rule(n, word, many, expected):
    assert plural(n, word, many) == expected


def test_one_family_one_item_reads_in_the_singular():
    data = sample_card(rows=1, rows_per_family={"boolq": 1}, task_funnel=[TaskFunnel("boolq", "boolq", 4, 4, 0, 4, 12, 0, 4, 1, 1)])
    for text in _texts(data):
        assert "1 task family" in text and "1 task families" not in text
        assert "1 row" in text and "1 rows" not in text
        assert "1 task " in text or "1 task)" in text or "1 task;" in text


def test_a_task_that_produced_nothing_is_a_row_of_zeros_and_families_sum_their_tasks():
    counts = {"seeds": {"arc_easy": 4, "gsm8k": 4, "boolq": 4}, "generate_requests": {"arc_easy": 4, "gsm8k": 4, "boolq": 4},
              "generate_quarantined": {"boolq": 4, "gsm8k": 2}, "generated": {"arc_easy": 4, "gsm8k": 2},
              "published": {"arc_easy": 3, "gsm8k": 1}}
    rows = task_funnel({"arc_easy": "arc", "gsm8k": "gsm8k", "boolq": "boolq", "winogrande": "winogrande"}, counts)
    by_task = {r.task: r for r in rows}
    assert set(by_task) == {"arc_easy", "gsm8k", "boolq", "winogrande"}
    assert by_task["boolq"].generated == 0 and by_task["boolq"].generate_quarantined == 4
    assert by_task["winogrande"] == TaskFunnel("winogrande", "winogrande")
    fams = {r.task: r for r in family_funnel(rows + [TaskFunnel("arc_challenge", "arc", 2, 2, 0, 2, published=2)])}
    assert fams["arc"].tasks == 2 and fams["arc"].published == 5 and fams["arc"].seeds == 6
    data = sample_card(task_funnel=rows)
    page = render_html(data, render_plots(data))
    assert page.count('class="zero"') == 4  # boolq and winogrande published nothing: task and family rows
    md = render_markdown(data, render_plots(data))
    assert "| ✗ boolq |" in md and "| ✗ winogrande |" in md


def test_the_headline_is_published_of_requested_from_the_start():
    # 12 generation requests, 4 published: 33.3%, not "% kept after filters"
    data = sample_card(rows=4, funnel=[("candidates", 6), ("validation", 4)],
                       task_funnel=[TaskFunnel("boolq", "boolq", 4, 12, 6, 6, 18, 0, 6, 6, 4)])
    for text in _texts(data):
        assert "kept after filters" not in text
        assert "33.3%" in text and "12 generation requests" in text


def test_a_card_with_no_rows_says_so_first_and_does_not_claim_no_model():
    data = sample_card(dataset="curated_commercial", rows=0, models={"generation": [], "enrichment": []},
                       rows_per_family={}, rows_per_format={}, lengths={}, length_sample=0, agreement=[],
                       samples_published=[])
    for text in _texts(data):
        assert "Nothing was published: this dataset has 0 rows" in text
        assert text.index("Nothing was published") < text.index("Provenance")
        assert "Generation model none" not in text.replace(":", "").replace("|", "").replace("  ", " ")
        assert "the ledger's models are under LLM stages" in text


@pytest.mark.parametrize("calibrated, says, never", [
    (False, ["self-agreement, uncalibrated", "4 answer samples", "not correctness against gold"], ["calibrated against gold:"]),
    (True, ["calibrated against gold: arc: 100.0% of 30 passing seeds had the gold answer (95% 88.6%–100.0%)"],
     ["uncalibrated"]),
])
def test_the_card_says_what_verification_measured(calibrated, says, never):
    calibration = _calibration_rows() if calibrated else []
    assert verification_meaning(4, calibration) == sample_card(calibration=calibration).verification_meaning
    if calibrated:  # a family none of whose calibration seeds passed is named as not measured, not left out
        unmeasured = {**calibration[0], "task_family": "gsm8k", "in_use": True, "precision": None, "passed": 0,
                      "measured": 2}
        assert "gsm8k: not measured (none of its 2 calibration seeds passed)" in verification_meaning(
            4, [*calibration, unmeasured])
    for text in _texts(sample_card(calibration=calibration)):
        for fact in says:
            assert fact in text, fact
        for fact in never:
            assert fact not in text, fact


def test_filter_alone_is_the_readme_query_under_its_name():
    curation = (REPO_ROOT / "docs" / "curation.md").read_text()
    assert f"# {FILTER_ALONE_LABEL}:" in curation
    assert FILTER_ALONE_SQL.format(filter_decisions="filter_decisions") in curation
    for text in _texts(sample_card()):
        assert FILTER_ALONE_LABEL in text and "rejects on its own" not in text


def test_sample_rows_and_labels():
    data = sample_card()
    for text in _texts(data):
        assert "Tom has 3 apples" in text and "majority_disagrees" in text and "is the sky green" in text
        assert "passage + question" in text
    assert cut_text("a\n b  " + "x" * 300, 20) == "a b " + "x" * 15 + "…"
    assert cut_text(None) == ""
    assert render_plots(data)["lengths"]  # the series are labelled as the data card names them
    assert set(data.lengths) == {"passage + question", "answer", "document"}


def _calibration_rows():
    """Rows of the `calibration` table as curate writes them (jobs/calibration.py), from real votes."""
    from udfs.calibration import Vote, calibration_curve

    votes = [Vote("arc", "k", "k", 4, 0, 4, True)] * 30 + [Vote("arc", "k", "w", 3, 1, 4, False)] * 3 \
        + [Vote("arc", "k", "k", 3, 1, 4, True)] * 10 + [Vote("arc", "k", "k", 2, 1, 4, True)] * 5
    rows = []
    for p in calibration_curve(votes, 4)["arc"]:
        rows.append({**p.to_dict(), "task_family": "arc", "threshold_label": "majority" if p.threshold is None
                     else str(p.threshold), "in_use": p.threshold == 1.0, "source": "auto" if p.threshold == 1.0 else None,
                     "target_precision": 0.9, "samples_per_item": 4})
    return rows


def test_card_shows_calibration_and_cost_or_says_they_are_missing():
    cost = {"calls": 600, "total": 0.42, "per_curated_item": 0.42 / 83, "per_kept_token": 0.42 / 9000,
            "curated_items": 83, "kept_tokens": 9000.0, "rejected_share": 0.31, "in_tokens": 250_000.0,
            "out_tokens": 119_000.0, "estimated_calls": 3, "unpriced": [],
            "by_stage": {"enrich": {"cost": 0.3, "calls": 480, "in_tokens": 190_000.0, "out_tokens": 95_000.0},
                         "generate": {"cost": 0.12, "calls": 120, "in_tokens": 60_000.0, "out_tokens": 24_000.0}},
            "by_family": {"arc": {"cost": 0.42, "calls": 600}},
            "by_outcome": {"curated": {"cost": 0.29}, "rejected": {"cost": 0.13}},
            "rejected_by_filter": {"verification": {"cost": 0.08}, "near_dup": {"cost": 0.05}}}
    data = sample_card(calibration=_calibration_rows(), cost=cost)
    plots = render_plots(data)
    assert "calibration" in plots
    page, md = render_html(data, plots), render_markdown(data, plots)
    assert "estimated answer accuracy" in page and "1.0 (auto, target 0.900)" in page
    assert "<b>1.000</b>" in page and "0.886 – 1.000" in page  # 30 of 30 passing at 4 of 4 right; Wilson bound
    assert "per kept token" in page and "31.0%" in page and "verification" in page and "estimated (characters / 4)" in page
    assert "| arc | 1.0 (auto) | 48 | 1.000 | 0.886 – 1.000 |" in md
    bare = render_html(sample_card(), render_plots(sample_card()))
    assert "Not measured" in bare and "No call in the ledger" in bare
