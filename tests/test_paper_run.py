"""docs/paper_run.md's commands, as written on the page and in its order, on data that stands in for the downloads:
synthetic rooms written as ScanNet downloads them (.sens), a tiny LLaVA-Video in the release's exact layout, and a
CUT3R checkpoint in the official format with random weights. Only the process count (one instead of eight) and
the paths change."""

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from test_convert_llava_video import write_release
from test_cut3r import FIXTURE, needs_fixture

PAGE = Path(__file__).resolve().parents[1] / "docs" / "paper_run.md"


def page_commands() -> list[str]:
    """The commands of the page's Steps block, continuation lines joined, comments dropped."""
    steps = PAGE.read_text().split("## Steps", 1)[1]
    block = re.search(r"```bash\n(.*?)```", steps, re.S).group(1)
    commands, current = [], ""
    for line in block.splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            commands.append(current.strip())
            current = ""
    return commands


def test_the_page_names_every_step_in_order():
    names = [c.split()[1] if c.startswith("loc3r") else c.split()[0] for c in page_commands()]
    assert names == ["prepare-scannet", "convert-llava-video", "convert-cut3r", "extract-priors", "check-data",
                     "torchrun", "eval", "eval", "eval", "eval"]


@needs_fixture
def test_every_command_of_the_paper_run_page_runs(tmp_path):
    from loc3r.priors.cut3r import token_cache_path
    from loc3r.synth.writer import generate

    raw = tmp_path / "raw"  # the downloads: ScanNet's .sens files and the benchmarks' question files
    generate(raw, n_scenes=6, seed=5, frames=32, size=64, with_sens=True)  # the paper samples 32 frames
    data = tmp_path / "DATA"
    data.mkdir()
    for name in ("sqa_task", "scanqa", "msqa", "vsibench"):
        shutil.copytree(raw / name, data / name)
    # VLM-3R's VSI-Bench-style training rows stand in as the VSI-Bench train split (the rooms' rows are test rows)
    shutil.copy(data / "vsibench" / "test.jsonl", data / "vsibench" / "train.jsonl")
    write_release(tmp_path / "LLaVA-Video-7B-Qwen2")
    paths = {"ScanNet/scans": raw / "scannet_raw", "DATA": data, "cut3r_512_dpt_4_64.pth": FIXTURE / "checkpoint.pth",
             "LLaVA-Video-7B-Qwen2": tmp_path / "LLaVA-Video-7B-Qwen2",
             "llava_video_7b_hf": tmp_path / "llava_video_7b_hf",
             "cut3r": tmp_path / "cut3r", "runs/loc3r_7b": tmp_path / "runs" / "loc3r_7b"}
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for command in page_commands():
        words = []
        for word in shlex.split(command):
            name, sep, value = word.partition("=")  # --data sqa3d=DATA:0.5
            root, colon, fraction = value.partition(":")
            if sep and root in paths:
                word = f"{name}={paths[root]}{colon}{fraction}"
            elif word.startswith("eval/"):
                word = str(tmp_path / word)
            else:
                word = str(paths.get(word, word))
            words.append(word)
        if words[0] == "torchrun":  # one process on this machine, eight on the paper's nodes
            words = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
                     *words[3:]]
        else:
            words = [sys.executable, "-m", "loc3r.cli", *words[1:]]
        if "prepare-scannet" in words:
            words[words.index("--workers") + 1] = "2"
        done = subprocess.run(words, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    # what the page says each step writes
    assert len(list((data / "scans").iterdir())) == 6 and (tmp_path / "llava_video_7b_hf" / "config.json").is_file()
    scenes = sorted(p.name for p in (data / "scans").iterdir())
    assert all(token_cache_path(data, scene, 32).is_file() for scene in scenes)  # extract-priors' camera tokens
    run = tmp_path / "runs" / "loc3r_7b"
    assert (run / "settings.json").is_file() and (run / "manifest.json").is_file()
    card = next((run / "checkpoints").iterdir()) / "README.md"
    for benchmark in ("sqa3d", "scanqa", "msqa", "vsibench"):
        assert (tmp_path / "eval" / benchmark / "report.md").is_file()
        assert f"| {benchmark} " in card.read_text()
