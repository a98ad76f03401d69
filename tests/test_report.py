"""``plab report``: a self-contained HTML report of a tiny real campaign (every section's figure, embedded,
nothing fetched), the one-run report, edge cases (one level, no growth, fine level missing), one-line
errors, and rendering in headless Chromium."""

from __future__ import annotations

import base64
import os
import re
import shutil
import sqlite3
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from principlelab.cli import _Group, main
from principlelab.cli.report_cmd import report
from principlelab.report import data as report_data
from principlelab.report.runplots import MAX_UNITS_DRAWN, network_drawing
from principlelab.studies.db import GrowthEventRow, LeaderboardDB, RunRow

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SECTION_FIGURES = ("1-leaderboard-digits.png", "2-importance-slots-digits.png", "2-importance-params-digits.png",
                   "3-coarse-vs-fine-digits.png", "4-accuracy-vs-cost-digits.png", "5-learning-curves-digits.png",
                   "6-growth-digits.png")
CAMPAIGN = """name = "{name}"
tasks = ["digits"]
seed = 0

[network]
hidden = [16]

[search]
connectivity = ["dense", "sparse_random"]
learning = ["backprop"]
trigger = {triggers}
growth = {growth}
composition = ["sequential"]

[[levels]]
name = "coarse"
data_fraction = 0.2
epochs = {epochs}
trials = {trials}
sampler = "random"
pruner = "none"
"""
FINE = """
[[levels]]
name = "fine"
epochs = 3
seeds = 2
"""
PROMOTION = """
[promotion]
rule = "top_k"
k = 3
"""


def cli() -> click.Group:
    """``plab`` with ``report`` registered (it is, once the CLI registers it; until then, a copy)."""
    if "report" in main.commands:
        return main
    return _Group(name="plab", commands={"report": report, **main.commands})


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli(), list(args))


def is_png(path: Path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_SIGNATURE and path.stat().st_size > 1024


@pytest.fixture(scope="module")
def db_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One database with three campaigns: ``tiny`` (coarse -> fine, some runs grow), ``flat`` (one level,
    no growth), run through the real CLI."""
    root = tmp_path_factory.mktemp("report")
    url = f"sqlite:///{root / 'plab.db'}"
    files = {
        "tiny": CAMPAIGN.format(name="tiny", triggers='["never", "every_k"]', growth='["none", "random"]',
                                epochs=3, trials=10) + FINE + PROMOTION,
        "flat": CAMPAIGN.format(name="flat", triggers='["never"]', growth='["none"]', epochs=1, trials=3)
                + PROMOTION,
    }
    for name, text in files.items():
        path = root / f"{name}.toml"
        path.write_text(text)
        result = CliRunner().invoke(main, ["campaign", "run", str(path), "--storage", url])
        assert result.exit_code == 0, (result.stderr, result.exception)
    return url


@pytest.fixture(scope="module")
def tiny_report(db_url: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("out") / "tiny"
    result = invoke("report", "tiny", "--storage", db_url, "--out", str(out))
    assert result.exit_code == 0, (result.stderr, result.exception)
    assert f"report written to {out / 'index.html'}" in result.stdout
    return out


def test_every_section_has_a_valid_png(tiny_report: Path):
    for name in SECTION_FIGURES:
        assert is_png(tiny_report / name), name


def test_html_embeds_every_figure_and_fetches_nothing(tiny_report: Path):
    html = (tiny_report / "index.html").read_text(encoding="utf-8")
    pngs = sorted(tiny_report.glob("*.png"))
    assert html.count('src="data:image/png;base64,') == len(pngs) == len(SECTION_FIGURES)
    for path in pngs:
        assert base64.b64encode(path.read_bytes()).decode() in html, path.name
    assert not re.search(r"https?://", html)
    assert "<script" not in html and "<link" not in html and "@import" not in html and "url(" not in html
    for title in ("1. Leaderboard", "2. What mattered", "3. Coarse vs fine", "4. Accuracy vs cost",
                  "5. Learning curves", "6. Growth"):
        assert title in html


def test_html_tables_match_the_leaderboard(tiny_report: Path, db_url: str):
    html = (tiny_report / "index.html").read_text(encoding="utf-8")
    with LeaderboardDB(db_url, create=False) as db:
        rows = report_data.recipe_rows(db, "tiny", "digits", "fine")
    assert rows
    for row in rows:
        assert f"<td>{row['recipe_key'][:12]}</td>" in html
    assert "Spearman" in html


def test_default_out_dir(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    result = invoke("report", "flat", "--storage", db_url)
    assert result.exit_code == 0, (result.stderr, result.exception)
    assert (tmp_path / "report-flat" / "index.html").is_file()


def test_one_level_campaign_without_growth(db_url: str, tmp_path: Path):
    result = invoke("report", "flat", "--storage", db_url, "--out", str(tmp_path))
    assert result.exit_code == 0, (result.stderr, result.exception)
    html = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "the campaign has one level, so nothing was promoted" in html
    assert "digits: no complete run grew" in html
    assert is_png(tmp_path / "1-leaderboard-digits.png")
    assert is_png(tmp_path / "4-accuracy-vs-cost-digits.png")
    assert not (tmp_path / "3-coarse-vs-fine-digits.png").exists()
    assert not (tmp_path / "6-growth-digits.png").exists()
    # 3 coarse trials: too few for an importance estimate, so a note instead of a plot
    assert not (tmp_path / "2-importance-slots-digits.png").exists()
    assert "slot importance not computed" in html


def test_campaign_whose_fine_level_has_no_results(db_url: str, tmp_path: Path):
    source = db_url.removeprefix("sqlite:///")
    copy = tmp_path / "copy.db"
    with sqlite3.connect(source) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    with sqlite3.connect(copy) as conn:
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("DELETE FROM plab_runs WHERE level = 'fine'")
    out = tmp_path / "out"
    result = invoke("report", "tiny", "--storage", f"sqlite:///{copy}", "--out", str(out))
    assert result.exit_code == 0, (result.stderr, result.exception)
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "no complete runs at the last level (fine) yet; showing coarse" in html
    assert "recipe(s) promoted from coarse to fine, none with a complete run at fine yet" in html
    assert is_png(out / "1-leaderboard-digits.png")
    assert not (out / "3-coarse-vs-fine-digits.png").exists()


def test_run_report_draws_the_network(db_url: str, tmp_path: Path):
    with LeaderboardDB(db_url, create=False) as db:
        data = report_data.load_campaign(db, "tiny")
    grown = [r for r in data.runs if r.status == "complete" and data.growth_events(r.id)]
    assert grown, "the tiny campaign should have a run that grew"
    run = grown[0]
    result = invoke("report", "--run", str(run.id), "--storage", db_url, "--out", str(tmp_path))
    assert result.exit_code == 0, (result.stderr, result.exception)
    assert is_png(tmp_path / f"run-{run.id}-network.png")
    assert is_png(tmp_path / f"run-{run.id}-curves.png")
    html = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "Final network" in html and "add_units" in html and html.count("data:image/png;base64,") == 2
    assert "Orange units were added by growth" in html


def test_growth_trajectory_matches_the_recorded_curve(db_url: str):
    """The events' deltas explain the sizes recorded each epoch (sequential composition: no parameters
    outside the network), and the step function passes through every epoch's record."""
    with LeaderboardDB(db_url, create=False) as db:
        data = report_data.load_campaign(db, "tiny")
    checked = grew = 0
    for run in data.runs:
        if run.status != "complete" or not run.curve:
            continue
        events = data.events.get(run.id, [])
        grouped = report_data.events_by_epoch(run.curve, events)
        for i in range(1, len(run.curve)):
            assert run.curve[i]["params"] - run.curve[i - 1]["params"] == sum(e.params_delta for e in grouped[i])
        traj = report_data.growth_trajectory(run, events)
        assert traj is not None
        for step, units, params in zip(traj["epoch_steps"], traj["epoch_units"], traj["epoch_params"]):
            i = max(j for j, s in enumerate(traj["steps"]) if s <= step)
            assert (traj["units"][i], traj["params"][i]) == (units, params), run.id
        checked += 1
        grew += bool(events)
    assert checked >= 10 and grew >= 1


def test_growth_trajectory_absorbs_parameters_the_events_do_not_count():
    """Capsule routing's projection grows with the last hidden layer; the event counts the network only."""
    run = RunRow(params=39141, structure={"widths": [64, 17, 10]}, curve=[
        {"step": 4, "params": 38954, "widths": [64, 16, 10]}, {"step": 8, "params": 38954, "widths": [64, 16, 10]},
        {"step": 12, "params": 39141, "widths": [64, 17, 10]}])
    event = GrowthEventRow(id=1, step=12, epoch=2, slot="growth", principle="random", operation="add_units:zero",
                           layer=1, units=1, params_delta=75)
    traj = report_data.growth_trajectory(run, [event])
    assert traj is not None
    assert traj["steps"] == [0.0, 12.0, 12.0]
    assert traj["params"] == [38954.0, 39141.0, 39141.0] and traj["units"] == [16.0, 17.0, 17.0]


def test_network_drawing_subsamples_wide_layers():
    png = network_drawing({"widths": [200, 100, 10], "skips": [[0, 2]], "activation": "tanh"}, [], "wide")
    assert png[:8] == PNG_SIGNATURE and len(png) > 1024
    assert MAX_UNITS_DRAWN == 64


def test_pareto_front():
    points = [(10, 0.5), (5, 0.4), (20, 0.5), (30, 0.9), (5, 0.3), (40, 0.8)]
    assert report_data.pareto_front(points) == [(5, 0.4), (10, 0.5), (30, 0.9)]
    assert report_data.pareto_front([]) == []


@pytest.mark.parametrize(("args", "expected"), [
    (("report", "nope"), "plab: error: unknown campaign 'nope'; known: flat, tiny"),
    (("report", "--run", "99999"), "plab: error: no run with id 99999 in "),
    (("report",), "plab: error: plab report needs a CAMPAIGN name or --run ID"),
    (("report", "tiny", "--run", "1"), "plab: error: plab report needs a CAMPAIGN name or --run ID"),
])
def test_errors_are_one_line(db_url: str, tmp_path: Path, args: tuple[str, ...], expected: str):
    result = invoke(*args, "--storage", db_url, "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert result.stderr.startswith(expected), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_missing_database_is_one_line_and_creates_nothing(tmp_path: Path):
    result = invoke("report", "tiny", "--storage", f"sqlite:///{tmp_path / 'none.db'}", "--out", str(tmp_path / "o"))
    assert result.exit_code == 2
    assert result.stderr.startswith("plab: error: no principlelab database at ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "none.db").exists() and not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------------------ chromium


def _chromium() -> str:
    from principlelab.report.browser import find_chromium

    binary = find_chromium()
    if binary is None or not (Path(binary).exists() or shutil.which(binary)):
        if os.environ.get("PRINCIPLELAB_REQUIRE_CHROMIUM") == "1":
            pytest.fail("PRINCIPLELAB_REQUIRE_CHROMIUM=1 but no Chromium is installed (apt-get install -y chromium)")
        pytest.skip("Chromium is not installed (apt-get install -y chromium)")
    return binary


@pytest.mark.chromium
def test_chromium_renders_every_image(tiny_report: Path, tmp_path: Path):
    _chromium()
    from principlelab.report.browser import dump_dom, screenshot

    dom = dump_dom(tiny_report / "index.html")
    images = re.findall(r"<img\b[^>]*>", dom)
    assert len(images) == len(SECTION_FIGURES)
    assert all('src="data:image/png;base64,' in img for img in images)
    assert "6. Growth" in dom
    png = screenshot(tiny_report / "index.html", tmp_path / "shot.png", width=1280, height=4000)
    assert png.read_bytes()[:8] == PNG_SIGNATURE and png.stat().st_size > 50_000


def test_a_shortened_label_keeps_its_recipe_key():
    """Two recipes with the same leading principles were both cut to '... capsule_routin…' in a legend."""
    from principlelab.report.plots import shorten

    label = "dense / grad_variance / katz / capsule_routing [eaf8a2]"
    assert shorten(label, 48) == "dense / grad_variance / katz / capsule… [eaf8a2]" and len(shorten(label, 48)) == 48
    assert shorten(label, 80) == label and shorten("x" * 70, 48) == "x" * 47 + "…"


@pytest.mark.parametrize("bars", [1, 5, 15])
def test_every_text_of_the_leaderboard_figure_lies_inside_it(bars: int):
    """The axis label ran vertically beside the bars and was longer than the axis: clipped at both ends."""
    from principlelab.report.plots import leaderboard_figure

    rows = [{"mean": 0.9, "std": 0.01, "count": 3}] * bars
    labels = [f"dense / grad_variance / random / capsule_routing / backprop [4ce6e{i:x}]" for i in range(bars)]
    fig = leaderboard_figure(rows, labels, "digits, level fine: recipes by mean test accuracy",
                             "recipe: connectivity / trigger / growth / composition / learning [key]")
    fig.canvas.draw()
    renderer, box = fig.canvas.get_renderer(), fig.bbox
    texts = [t for t in fig.findobj(lambda a: hasattr(a, "get_text")) if t.get_visible() and t.get_text()]
    assert any("recipe: connectivity" in t.get_text() for t in texts)
    for text in texts:
        extent = text.get_window_extent(renderer)
        assert box.x0 - 1 <= extent.x0 and extent.x1 <= box.x1 + 1, text.get_text()
        assert box.y0 - 1 <= extent.y0 and extent.y1 <= box.y1 + 1, text.get_text()


def test_the_report_of_a_rejected_run_says_it_has_no_network(tmp_path: Path):
    """A rejected run never trained: its report drew an empty 'final network' figure."""
    campaign = tmp_path / "rejected.toml"
    campaign.write_text(CAMPAIGN.format(name="rejected", triggers='["never"]', growth='["none"]', epochs=1, trials=1)
                        .replace('learning = ["backprop"]', 'learning = ["forward_forward"]')
                        .replace('composition = ["sequential"]', 'composition = ["capsule_routing"]'))
    url = f"sqlite:///{tmp_path / 'plab.db'}"
    assert CliRunner().invoke(main, ["campaign", "run", str(campaign), "--storage", url]).exit_code == 0
    with LeaderboardDB(url, create=False) as db:
        (run,) = report_data.load_campaign(db, "rejected").runs
    assert run.status == "rejected"
    out = tmp_path / "out"
    result = invoke("report", "--run", str(run.id), "--storage", url, "--out", str(out))
    assert result.exit_code == 0, (result.stderr, result.exception)
    html = (out / "index.html").read_text(encoding="utf-8")
    assert f"run {run.id} was rejected before training: it has no network" in html
    assert not (out / f"run-{run.id}-network.png").exists() and "data:image/png;base64," not in html


def test_the_report_of_a_campaign_stopped_in_its_first_level_names_the_levels_to_come(tmp_path: Path):
    """It read the levels from those run so far: 'levels coarse' and 'the campaign has one level'."""
    from principlelab.registry import get_registry
    from principlelab.studies.campaign import CampaignRunner
    from principlelab.studies.campaign_file import parse_campaign

    text = CAMPAIGN.format(name="stopped", triggers='["never"]', growth='["none"]', epochs=1, trials=2) + FINE
    url = f"sqlite:///{tmp_path / 'plab.db'}"
    runner = CampaignRunner(parse_campaign(text), text, url, registry=get_registry(), sample_ahead=False)
    ctx = runner.context("digits", 0)
    runner.run_level(ctx, runner.study(ctx))  # the coarse level only, as if stopped before promotion
    runner.db.close()
    out = tmp_path / "out"
    result = invoke("report", "stopped", "--storage", url, "--out", str(out))
    assert result.exit_code == 0, (result.stderr, result.exception)
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "levels coarse → fine (not run yet: fine; rerun the campaign to continue)" in html
    assert "digits: nothing was promoted yet: the campaign stopped before level fine (rerun it to continue)" in html


def test_importance_counts_a_retried_trial_once_as_campaign_status_does():
    """After an interruption the report said '19 complete of 85 trials' where status said 80: each of the
    5 retries is a second Optuna trial of one campaign trial."""
    import optuna

    from principlelab.report.importance import study_importance
    from principlelab.studies.optuna_setup import retry_callback

    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, study_name="s", direction="maximize")
    for value in (0.5, 0.6, 0.7):
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        study.tell(trial, value)
    dead = study.ask()
    dead.suggest_float("x", 0, 1)
    study.tell(dead, state=optuna.trial.TrialState.FAIL)
    retry_callback(max_retry=1)(study, study.trials[-1])  # a WAITING retry of trial 3
    retried = study.ask()  # takes the waiting trial
    study.tell(retried, 0.8)
    assert len(study.trials) == 5
    importance = study_importance(storage, "s")
    assert (importance.n_complete, importance.n_total) == (4, 4)


def test_coarse_vs_fine_counts_each_promoted_recipe_once_after_a_study_version_change():
    """After a new study version (v2) the panel listed each promoted recipe twice (v1's promotion and v2's), each
    with the fine mean over both versions' runs, so its correlation had 6 points and p = 0.0222 where the
    campaign printed 3 and p = 0.333. It now reads the fine level's newest version, as the campaign does."""
    from principlelab.studies.db import PromotionRow, StudyVersionRow

    versions = [StudyVersionRow(id=i, task="digits", level=level, level_index=index, version=version)
                for i, (level, index, version) in enumerate(
                    [("coarse", 0, 1), ("fine", 1, 1), ("coarse", 0, 2), ("fine", 1, 2)], start=1)]
    keys = ["a" * 16, "b" * 16, "c" * 16]
    promotions = [PromotionRow(id=len(keys) * (to // 4) + i, from_study_version_id=to - 1, to_study_version_id=to,
                               recipe_key=key, source_value=0.5 + 0.1 * i)
                  for to in (2, 4) for i, key in enumerate(keys)]
    runs = [RunRow(id=100 * sv + 10 * i + seed, task="digits", level="fine", status="complete", study_version_id=sv,
                   recipe_key=key, seed=seed, objective=0.6 + 0.1 * i + (0.05 if sv == 4 else 0.0) + 0.01 * seed,
                   connectivity="dense", learning="backprop", trigger="never", growth="none",
                   composition="sequential")
            for sv in (2, 4) for i, key in enumerate(keys) for seed in (0, 1)]
    data = report_data.CampaignData("c", "sqlite://", "", versions, runs, {}, promotions, ["digits"],
                                    ["coarse", "fine"])
    (pair,) = report_data.promotions(data, "digits")
    assert pair.promoted == 3
    assert [pt.recipe_key for pt in pair.points] == keys
    assert [pt.n for pt in pair.points] == [2, 2, 2]
    assert [round(pt.fine_mean, 6) for pt in pair.points] == [0.655, 0.755, 0.855]  # v2's runs only
    assert (pair.corr.n, round(pair.corr.spearman_p, 3)) == (3, 0.333)


def test_the_leaderboard_says_when_it_pools_study_versions():
    from principlelab.report.build import pooled_versions_note
    from principlelab.studies.db import StudyVersionRow

    versions = [StudyVersionRow(id=i, task="digits", level=level, level_index=index, version=version)
                for i, (level, index, version) in enumerate(
                    [("coarse", 0, 1), ("fine", 1, 1), ("coarse", 0, 2)], start=1)]
    data = report_data.CampaignData("c", "sqlite://", "", versions, [], {}, [], ["digits"], ["coarse", "fine"])
    note = pooled_versions_note(data, "digits", "coarse")
    assert note is not None and "2 study versions of level coarse (v1 to v2" in note and "campaign status c" in note
    assert pooled_versions_note(data, "digits", "fine") is None  # one version: nothing pooled

