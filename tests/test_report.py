"""What `loc3r eval` gives a person to read and look at: report.md with the blind baselines on the same questions,
predictions.jsonl's errors and marks, and view.html in a real headless browser."""

import json
import shutil
from collections import Counter

import numpy as np
import pytest

from loc3r.cli import main
from loc3r.evaluate import metrics as m
from loc3r.evaluate.baselines import blind_baselines, family


@pytest.fixture(scope="module")
def evaluation(synth_data, tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "eval"
    assert main(["eval", "--checkpoint", str(tiny_checkpoint), "--data", str(synth_data), "--split", "train",
                 "--out", str(out), "--plots", "3", "--limit", "40"]) == 0
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    return out, json.loads((out / "metrics.json").read_text()), records


def test_predictions_carry_errors_and_marks_in_metres_and_degrees(evaluation):
    _, metrics, records = evaluation
    for r in records:
        assert r["situated"] == (r["position_error_m"] is not None)
        if r["situated"]:
            assert r["position_error_m"] == pytest.approx(np.hypot(*np.subtract(r["position_xy_m"],
                                                                                r["gt_position_xy_m"])))
            turn = (r["yaw_deg"] - r["gt_yaw_deg"] + 180) % 360 - 180
            assert r["yaw_error_deg"] == pytest.approx(abs(turn), abs=1e-6)
        assert r["answer_score"] == m.answer_scores("sqa3d", "leo", [r["answer"]], [r["gt_answers"]], [""])[0]
    # the marks add up to the official EM@1
    assert 100 * np.mean([r["answer_score"] for r in records]) == pytest.approx(metrics["qa"]["em1"])


def test_the_baselines_are_the_best_constant_guesses_on_the_same_questions(evaluation):
    _, metrics, records = evaluation
    base = metrics["baselines"]
    # brute force: every question answered with its family's most frequent answer among the evaluated questions
    counts = {}
    for r in records:
        counts.setdefault(family(r), Counter())[r["gt_answers"][0]] += 1
    guesses = [counts[family(r)].most_common(1)[0][0] for r in records]
    em = [float(m.leo_clean_answer(g) == m.leo_clean_answer(r["gt_answers"][0])) for g, r in zip(guesses, records)]
    assert base["answer prior"]["answers"]["score"] == pytest.approx(100 * np.mean(em))
    # mean pose: one position and one facing for every situation
    seen, xy, yaw = set(), [], []
    for r in records:
        if r["situated"] and (r["scene_id"], r["situation"]) not in seen:
            seen.add((r["scene_id"], r["situation"]))
            xy.append(r["gt_position_xy_m"])
            yaw.append(np.radians(r["gt_yaw_deg"]))
    xy, yaw = np.array(xy), np.array(yaw)
    centre = xy.mean(0)
    assert base["mean pose"]["localization"]["acc_1.0m"] == pytest.approx(
        100 * np.mean(np.linalg.norm(xy - centre, axis=1) <= 1.0))
    assert "trajectory centre" in base  # the synthetic rooms come with poses


def test_baselines_without_answers_or_situations_leave_those_rows_out():
    records = [{"question_id": 0, "scene_id": "s", "situation": "", "question": "what is it?", "question_type": "N/A",
                "situated": False, "gt_answers": [""], "answer": "x", "answer_score": None}]
    assert blind_baselines(records, [], "scanqa", "vlm3r") == {}


def test_the_report_sets_the_model_beside_the_baselines_and_shows_outcomes(evaluation):
    out, metrics, records = evaluation
    text = (out / "report.md").read_text()
    summary = text.split("## Summary")[1].split("##")[0]
    assert "**this model**" in summary and "answer prior (blind)" in summary and "mean pose (blind)" in summary
    assert f"| {metrics['qa']['em1']:.1f} |" in summary  # rounded as people read it
    assert "## Answers by family" in text
    for outcome in ("best localization", "median localization", "worst localization"):
        assert f"| {outcome} |" in text
    situations = [r for r in records if r["situated"]]
    worst = max(situations, key=lambda r: r["position_error_m"])
    assert f"| {worst['position_error_m']:.2f} m |" in text.split("| worst localization |")[1].split("\n")[0]
    assert len(list((out / "plots").glob("*.png"))) == 3 and "0000000" not in text  # no 16-digit numbers


def browser():
    """A headless Chromium driven by Selenium, or the reason there is none."""
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        return None, "selenium is not installed (pip install selenium)"
    binary = next((shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    driver = shutil.which("chromedriver")
    if binary is None or driver is None:
        return None, "no Chromium and chromedriver on PATH (Debian: apt-get install chromium chromium-driver)"
    options = Options()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1400,1600"):
        options.add_argument(arg)
    options.binary_location = binary
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=options), ""


def test_the_interactive_view_in_a_real_browser(evaluation, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    out, _, records = evaluation
    driver, reason = browser()
    if driver is None:
        pytest.skip(reason)
    try:
        driver.get((out / "view.html").resolve().as_uri())
        WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#bev .main-svg"))
        assert len(driver.find_elements(By.CSS_SELECTOR, "#strip img")) == 4  # the tiny checkpoint's 4 frames
        rows = driver.find_elements(By.CSS_SELECTOR, "#table tbody tr")
        assert len(rows) == len(records)
        # hovering a vision token (a real mouse move) outlines its patch on its frame, as its hover label says
        traces = driver.find_elements(By.CSS_SELECTOR, "#bev .scatterlayer .trace")
        names = driver.execute_script("return document.getElementById('bev').data.map(t => t.name);")
        tokens = traces[next(i for i, n in enumerate(names) if n.startswith("the model's map"))]
        ActionChains(driver).move_to_element(tokens.find_elements(By.CSS_SELECTOR, "path.point")[5]).perform()
        WebDriverWait(driver, 10).until(lambda d: d.find_element(By.ID, "patch").is_displayed())
        label = driver.find_element(By.CSS_SELECTOR, "#bev .hovertext").text
        hot = [e.get_attribute("id") for e in driver.find_elements(By.CSS_SELECTOR, ".frame.hot")]
        assert len(hot) == 1 and f"frame {hot[0][len('frame'):]}, patch row" in label, (hot, label)
        # clicking a situation on the map shows its prediction and errors
        k = next(i for i, r in enumerate(records) if r["situated"])
        driver.execute_script(f"document.getElementById('bev').emit('plotly_click', "
                              f"{{points: [{{customdata: {k}}}]}});")
        details = driver.find_element(By.ID, "details").text
        assert records[k]["situation"] in details and f"position {records[k]['position_error_m']:.2f} m" in details
        # the table filters by family and by wrong answers
        name = family(records[0])
        Select(driver.find_element(By.ID, "family")).select_by_value(name)
        shown = driver.find_elements(By.CSS_SELECTOR, "#table tbody tr")
        assert len(shown) == sum(family(r) == name for r in records)
        driver.find_element(By.ID, "wrong").click()
        wrong = sum(family(r) == name and r["answer_score"] < 0.5 for r in records)
        assert len(driver.find_elements(By.CSS_SELECTOR, "#table tbody tr")) == wrong
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], errors
        shot = tmp_path / "view.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    finally:
        driver.quit()


def test_eval_enters_its_numbers_in_the_model_card_once_per_evaluation(synth_data, tiny_checkpoint, tmp_path):
    from loc3r.train.checkpoint import resolve_checkpoint

    ckpt = tmp_path / "ckpt"
    shutil.copytree(resolve_checkpoint(tiny_checkpoint), ckpt)
    before = (ckpt / "README.md").read_text()
    for k in range(2):  # the same evaluation twice: one row, replaced
        out = tmp_path / f"eval{k}"
        assert main(["eval", "--checkpoint", str(ckpt), "--data", str(synth_data), "--split", "train", "--out",
                     str(out), "--limit", "8", "--plots", "0", "--card"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    card = (ckpt / "README.md").read_text()
    assert card.startswith(before.rstrip()) and card.count("## Evaluations") == 1
    rows = [line for line in card.split("## Evaluations")[1].splitlines() if line.startswith("| sqa3d train")]
    assert rows == [f"| sqa3d train ({synth_data}), first 8 | 8 | {metrics['localization']['acc_0.5m']:.1f} | "
                    f"{metrics['localization']['acc_1.0m']:.1f} | {metrics['localization']['acc_15deg']:.1f} | "
                    f"{metrics['localization']['acc_30deg']:.1f} | EM@1 {metrics['qa']['em1']:.1f} (leo) |"]
    # the control (--hide-situation-tokens) gets a row of its own and says so in its metrics and report, so that it is
    # never taken for the model's own evaluation
    out = tmp_path / "hidden"
    assert main(["eval", "--checkpoint", str(ckpt), "--data", str(synth_data), "--split", "train", "--out", str(out),
                 "--limit", "8", "--plots", "0", "--card", "--hide-situation-tokens"]) == 0
    assert json.loads((out / "metrics.json").read_text())["control"] == "<Pos>/<Ori> hidden from the answers"
    assert "(<Pos>/<Ori> hidden from the answers)" in (out / "report.md").read_text().splitlines()[0]
    rows = [line for line in (ckpt / "README.md").read_text().split("## Evaluations")[1].splitlines()
            if line.startswith("| sqa3d train")]
    assert len(rows) == 2 and rows[0] != rows[1]
    assert rows[1].startswith(f"| sqa3d train ({synth_data}), first 8, <Pos>/<Ori> hidden from the answers |")
