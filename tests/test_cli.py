"""The plab CLI: real runs reach the accuracy bars, growth is reported, bad input fails in one line."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest
from click.testing import CliRunner

from principlelab.cli import main


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def run_json(*args: str) -> dict:
    code, out, err = invoke("run", "--json", *args)
    assert code == 0, err
    return json.loads(out)


def test_plugins_json_lists_every_slot_with_parameters():
    code, out, _ = invoke("plugins", "--json")
    assert code == 0
    rows = json.loads(out)
    names = {(r["slot"], r["name"]) for r in rows}
    for expected in [("connectivity", "dense"), ("connectivity", "sparse_random"), ("learning", "backprop"),
                     ("trigger", "never"), ("trigger", "every_k"), ("growth", "none"), ("growth", "random"),
                     ("composition", "sequential")]:
        assert expected in names
    backprop = next(r for r in rows if r["name"] == "backprop")
    assert backprop["package"] == "principlelab" and backprop["version"]
    lr = next(p for p in backprop["parameters"] if p["name"] == "lr")
    assert lr["bounds"]["gt"] == 0.0 and lr["default"] == pytest.approx(3e-3)
    assert lr["search"] == {"low": 1e-4, "high": 0.03, "log": True, "step": None}
    # what campaigns search: a Literal field's choices without a hint, nothing for an unsearched field
    random = next(r for r in rows if (r["slot"], r["name"]) == ("growth", "random"))
    search = {p["name"]: p["search"] for p in random["parameters"]}
    assert search["operator"] == {"choices": ["split", "clone", "zero"]} and search["max_total"] is None
    assert random["description"].endswith("stops at ``max_total`` added units.")  # the whole first paragraph


def test_plugins_table_names_packages():
    code, out, _ = invoke("plugins")
    assert code == 0 and "sparse_random" in out and "principlelab" in out


def test_plugins_table_shows_what_campaigns_search():
    """The table showed bounds only: a numeric field's search range was in --json alone."""
    code, out, _ = invoke("plugins", "--slot", "connectivity")
    flat = " ".join(out.replace("│", " ").split())
    assert code == 0
    assert "density=0.25 [>0.0 <=1.0; search 0.02..1.0 log]" in flat
    assert "sparse_output=False [search {False, True}]" in flat
    assert "every=1 [>=1 <=1000]," in flat  # not searched: bounds only


def test_run_digits_baseline_reaches_095():
    result = run_json("--task", "digits")
    assert result["test_accuracy"] >= 0.95
    for key in ("val_accuracy", "params", "macs", "wall_s", "growth_events", "recipe"):
        assert key in result
    assert result["recipe"]["growth"]["name"] == "none" and result["growth_events"] == []
    assert result["params"] == 64 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10


@pytest.mark.slow
def test_run_mnist1d_default_fidelity_reaches_06():
    result = run_json("--task", "mnist1d")
    assert result["test_accuracy"] >= 0.6


def test_run_with_random_growth_reports_every_event():
    result = run_json("--task", "digits", "--growth", "random", "--trigger", "every_k", "--epochs", "6",
                      "--set", "growth.random.units=10", "--set", "trigger.every_k.k=2")
    events = result["growth_events"]
    assert sum(e["units"] for e in events) == 20  # fired after epochs 2 and 4, not after the last
    assert {e["epoch"] for e in events} == {1, 3}
    for event in events:
        assert event["operation"] == "add_units:split" and event["layer"] in (1, 2)
        assert event["step"] > 0 and event["principle"] == "random" and event["function_preserving"]
    assert sum(result["widths"][1:-1]) == 512 + 20


def test_progress_output_reports_growth_events():
    code, out, err = invoke("run", "--task", "digits", "--growth", "random", "--trigger", "every_k",
                            "--epochs", "3")
    assert code == 0
    assert "test accuracy" in out
    # epochs count from 1 (it said 'epoch 1' for the trigger's 'epoch 2'), the trigger's reason is the trigger's
    assert re.search(r"epoch 2, step \d+: add_units:\w+ layer \d \+\d+ units \(growth 'random', trigger: epoch 2 "
                     r"is a multiple of k=2\)", " ".join((out + err).split())), out + err


def test_same_seed_reproduces_the_run():
    first = run_json("--task", "xor", "--epochs", "3", "--seed", "7", "--growth", "random", "--trigger", "every_k")
    second = run_json("--task", "xor", "--epochs", "3", "--seed", "7", "--growth", "random", "--trigger", "every_k")
    assert first["test_loss"] == second["test_loss"] and first["widths"] == second["widths"]


def test_recipe_file_with_overrides(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('task = "xor"\nseed = 3\n[fidelity]\nepochs = 2\n[growth]\nname = "random"\nunits = 4\n'
                      '[trigger]\nname = "every_k"\nk = 1\n')
    result = run_json("--recipe", str(recipe), "--seed", "4")
    assert result["recipe"]["seed"] == 4 and result["recipe"]["task"] == "xor"
    # the recipe as it ran: the file's value, every other field at its default
    assert result["recipe"]["growth"]["config"] == {"units": 4, "operator": "split", "noise": 0.05, "max_total": 1024}
    assert result["recipe"]["trigger"]["config"] == {"k": 1, "max_firings": 100}
    assert sum(e["units"] for e in result["growth_events"]) == 4


def assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    message = err.strip()
    assert message.startswith("plab: error: ") and "\n" not in message and "Traceback" not in message
    for fragment in fragments:
        assert fragment in message


def test_unknown_principle_lists_known_ones():
    code, _, err = invoke("run", "--growth", "nope")
    assert_one_line_error(code, err, "'nope'", "none", "random")


def test_parameter_out_of_range_names_field_and_bound():
    code, _, err = invoke("run", "--set", "growth.random.units=0")
    assert_one_line_error(code, err, "growth.random.units", "greater than or equal to 1")
    code, _, err = invoke("run", "--set", "learning.backprop.lr=-1")
    assert_one_line_error(code, err, "learning.backprop.lr", "greater than 0")


def test_unknown_parameter_and_mismatched_set():
    code, _, err = invoke("run", "--set", "growth.random.colour=3")
    assert_one_line_error(code, err, "growth.random.colour")
    code, _, err = invoke("run", "--growth", "none", "--set", "growth.random.units=3")
    assert_one_line_error(code, err, "'none'", "'random'")


def test_unknown_task():
    code, _, err = invoke("run", "--task", "imagenet")
    assert_one_line_error(code, err, "'imagenet'", "digits", "mnist1d")


def test_malformed_recipe_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("task = [unclosed\n")
    code, _, err = invoke("run", "--recipe", str(bad))
    assert_one_line_error(code, err, "bad.toml", "not valid TOML")
    wrong = tmp_path / "wrong.toml"
    wrong.write_text("seed = -3\n")
    code, _, err = invoke("run", "--recipe", str(wrong))
    assert_one_line_error(code, err, "wrong.toml", "seed")


def test_data_file_with_mismatched_rows(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, X=np.zeros((100, 4)), y=np.zeros(99, dtype=int))
    code, _, err = invoke("run", "--task", f"file:{path}")
    assert_one_line_error(code, err, "100", "99")


def test_user_data_file_trains(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 5))
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    path = tmp_path / "data.npz"
    np.savez(path, X=x, y=y)
    result = run_json("--task", f"file:{path}", "--epochs", "10", "--hidden", "32")
    assert result["test_accuracy"] > 0.85


def test_a_skipped_plugin_is_one_warning_line_and_an_undeclared_signal_one_error_line(tmp_path):
    """What a plugin author sees: no Python file/line/source for the warning, no traceback for the error."""
    import subprocess
    import sys
    from pathlib import Path

    plab = Path(sys.executable).with_name("plab")
    (tmp_path / "recipe.toml").write_text('task = "digits"\n[fidelity]\nepochs = 2\n[network]\nhidden = [16]\n'
                                          '[growth]\nname = "reads_grad_norms"\n[trigger]\nname = "every_k"\n'
                                          'config = { k = 1 }\n')
    rule = ("from typing import ClassVar\nfrom principlelab.core import principles as P\n"
            "from principlelab.registry import hookimpl\n\nclass R(P.GrowthRule):\n"
            "    name: ClassVar[str] = 'reads_grad_norms'\n\n    def grow(self, net, signals, generator):\n"
            "        signals.grad_norms\n        return []\n\nclass Bad(R):\n    name: ClassVar[str] = 'a.b'\n\n"
            "@hookimpl\ndef register_growth_rules(register):\n    register(R)\n    register(Bad)\n")
    (tmp_path / "principles.py").write_text(rule)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRINCIPLELAB_STRICT")}
    proc = subprocess.run([str(plab), "run", "--recipe", "recipe.toml"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 2, proc.stderr
    assert lines[0].startswith("plab: warning: principlelab plugin local:") and "'a.b' is not allowed" in lines[0]
    assert lines[1] == ("plab: error: signals.grad_norms was read, but no principle of this run declares "
                        "'grad_norms' in its required_signals, so none were recorded; add it to the reading "
                        "principle's required_signals")


def test_an_unknown_key_lists_the_allowed_keys_and_a_bad_value_the_whole_range():
    code, _, err = invoke("run", "--growth", "random", "--set", "growth.random.typo=5")
    assert_one_line_error(code, err, "growth.random.typo: Extra inputs are not permitted (got 5); "
                          "allowed keys: units, operator, noise, max_total")
    code, _, err = invoke("run", "--growth", "random", "--set", "growth.random.units=5000")
    assert_one_line_error(code, err, "growth.random.units: Input should be less than or equal to 4096 (got 5000); "
                          "allowed: 1 <= units <= 4096")
    code, _, err = invoke("run", "--set", "learning.backprop.lr=nan")  # NaN fails every bound: say so
    assert_one_line_error(code, err, "learning.backprop.lr: Input should be a number, not NaN (got 'nan'); "
                          "allowed: 0.0 < lr <= 10.0")
    code, _, err = invoke("run", "--hidden", "0,32")  # the validator quotes the value: not twice
    assert_one_line_error(code, err, "network.hidden: hidden widths must be >= 1 and at least one layer, got [0, 32]")
    assert "(got" not in err


def test_growth_on_a_network_that_starts_at_the_width_cap_is_warned_about():
    code, out, err = invoke("run", "--json", "--fidelity", "coarse", "--epochs", "1", "--growth", "random",
                            "--trigger", "every_k")
    assert code == 0, err
    assert "plab: warning: every hidden layer starts at the width cap ([256, 256] hidden, width_cap 64 at " \
           "fidelity 'coarse'): growth 'random' can add no units" in err
    assert json.loads(out)["growth_events"] == []  # what the warning is about
    code, _, err = invoke("run", "--json", "--fidelity", "coarse", "--epochs", "1", "--growth", "random",
                          "--trigger", "every_k", "--hidden", "32,32")
    assert code == 0 and "warning" not in err


def test_a_recipe_file_fidelity_table_named_like_a_level_changes_only_the_keys_it_gives(tmp_path):
    from principlelab.core.recipe import FIDELITIES, load_recipe, make_recipe

    path = tmp_path / "r.toml"
    path.write_text('task = "digits"\n[fidelity]\nname = "coarse"\nepochs = 2\n')
    fidelity = load_recipe(path).fidelity
    assert fidelity == FIDELITIES["coarse"].model_copy(update={"epochs": 2})  # data_fraction 0.3, width_cap 64
    own = make_recipe({"fidelity": {"name": "mine", "epochs": 2}}).fidelity  # not a named level: the defaults
    assert (own.data_fraction, own.width_cap, own.epochs) == (1.0, None, 2)
    dumped = make_recipe({"fidelity": "coarse"}).model_dump()
    assert make_recipe(dumped).fidelity == FIDELITIES["coarse"]  # a full table round-trips unchanged


def test_a_bad_option_or_command_is_one_line_naming_the_help_to_read():
    code, _, err = invoke("report", "--run", "abc")
    assert_one_line_error(code, err, "Invalid value for '--run'", "(see plab report --help)")
    code, _, err = invoke("campaign", "run", "--workers", "x", "c.toml")
    assert_one_line_error(code, err, "Invalid value for '--workers'", "(see plab campaign run --help)")
    code, _, err = invoke("leaderboard", "--group-by", "nope")
    assert_one_line_error(code, err, "'--group-by'", "(see plab leaderboard --help)")


@pytest.mark.parametrize(("raised", "expected", "code"), [
    (lambda: __import__("sqlalchemy").exc.OperationalError("INSERT ...", {}, OSError(28, "database or disk is full")),
     "plab: error: the database failed: OSError: [Errno 28] database or disk is full (what was committed is kept; "
     "fix the cause and rerun: a campaign resumes where it stopped)\n", 2),
    (KeyboardInterrupt, "plab: interrupted (what finished is kept; rerun a campaign to resume it)\n", 130),
])
def test_a_failing_database_and_a_ctrl_c_are_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path, raised, expected,
                                                      code):
    """A database failing mid-command printed SQLAlchemy's traceback; a Ctrl-C printed only 'Aborted!'."""
    from principlelab.studies import leaderboard
    from principlelab.studies.db import LeaderboardDB

    url = f"sqlite:///{tmp_path / 'plab.db'}"
    with LeaderboardDB(url):
        pass

    def fail(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise raised()

    monkeypatch.setattr(leaderboard, "query", fail)
    status, _out, err = invoke("leaderboard", "--storage", url)
    assert (status, err) == (code, expected)


def test_a_long_file_task_keeps_the_progress_bar_its_count_and_time():
    """A file: task with a long path took the whole line, pushing the bar, '12/12' and the time out."""
    from rich.console import Console

    from principlelab.cli.campaign_cmd import TASK_LABEL, ProgressDisplay
    from principlelab.studies.campaign import LevelProgress

    console = Console(width=100, record=True, force_terminal=False)
    display = ProgressDisplay(console)
    task = "file:/tmp/some/very/deep/folder/of/experiments/2026/digits_img.npz"
    display(LevelProgress(task, "coarse", done=12, target=12, running=0, best=0.9))
    console.print(display.progress.get_renderable())
    line = console.export_text().strip()
    assert "…" + task[1 - TASK_LABEL:] + " coarse" in line and task not in line
    assert "12/12" in line and "best 0.9000" in line and "0:00:0" in line
