"""`loc3r demo`, the README's main command, end to end on a small budget (4 rooms, 2 training steps)."""

import json

from loc3r.cli import main


def test_demo_runs_the_whole_chain(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--scenes", "4", "--test-scenes", "2", "--steps", "2",
                 "--batch-size", "2"]) == 0
    printed = capsys.readouterr().out
    assert (out / "data" / "sqa_task").is_dir() and list((out / "bev").glob("*.png"))
    assert json.loads((out / "run" / "latest.json").read_text())["step"] == 2
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["n_situations"] > 0 and set(metrics["localization"]) >= {"acc_0.5m", "acc_1.0m", "acc_15deg",
                                                                             "acc_30deg"}
    assert "## Summary" in (out / "eval" / "report.md").read_text() and (out / "eval" / "view.html").is_file()
    card = next((out / "run" / "checkpoints").glob("step_*")) / "README.md"
    assert f"| sqa3d test ({out / 'test_data'}) |" in card.read_text()  # the held-out numbers in the model card
    assert (out / "example.png").stat().st_size > 0
    # the example inference printed its reference and the model's answer, position and yaw
    assert "reference: answer" in printed and "test localization:" in printed and "total" in printed
    assert "answer:" in printed and "position: x =" in printed and "facing:" in printed


def relations_a_situation(root):
    """The mean number of relation questions (left / right, navigation, distance) a situation of the rooms has."""
    from loc3r.synth.situations import RELATION_KINDS

    counts = []
    for f in (root / "synth").glob("*.json"):
        desc = json.loads(f.read_text())
        situated = [q for q in desc["questions"] if q["situation_id"] is not None]
        counts.append(sum(q["question_type"] in RELATION_KINDS for q in situated) / len(desc["situations"]))
    return sum(counts) / len(counts)


def test_demo_trains_the_situated_recipe_on_its_rooms_and_tiny_demo_on_the_plain_rooms(tmp_path):
    """The demo's recipe is tiny_situated: its training rooms carry the recipe's extra relation questions (`loc3r
    synth --relations 6`: six more a situation than the held-out rooms have, less what their rooms differ by) and
    the run trains it (two LLM layers added, joining with the loop starts); `--recipe tiny_demo` trains the 4-layer
    model on rooms like the held-out ones. The chain runs to the end either way."""
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--scenes", "3", "--test-scenes", "2", "--steps", "2",
                 "--batch-size", "2"]) == 0
    assert relations_a_situation(out / "data") >= relations_a_situation(out / "test_data") + 5
    settings = json.loads((out / "run" / "settings.json").read_text())
    assert (settings["recipe"], settings["steps"], settings["added_layers"], settings["added_layers_join"]) == (
        "tiny_situated", 2, 2, True)
    plain = tmp_path / "plain"
    assert main(["demo", "--out", str(plain), "--recipe", "tiny_demo", "--scenes", "3", "--test-scenes", "2",
                 "--steps", "2", "--batch-size", "2"]) == 0
    assert relations_a_situation(plain / "data") < relations_a_situation(out / "data") - 4
    settings = json.loads((plain / "run" / "settings.json").read_text())
    assert (settings["recipe"], settings["added_layers"]) == ("tiny_demo", None)
    assert (plain / "eval" / "metrics.json").is_file() and (plain / "example.png").stat().st_size > 0
