"""Batch building (loc3r.model.processor): prompt layout, placeholder run, labels, padding, pixel normalisation.

`make_samples` and `WORDS` are shared with test_model.py.
"""

import numpy as np
import pytest
import torch

from loc3r.constants import END_OF_TURN, IGNORE_INDEX, NO_SITUATION, ORI_TOKEN, POS_TOKEN, VIDEO_TOKEN
from loc3r.data.sample import Sample
from loc3r.errors import Loc3rError
from loc3r.model.config import Loc3RConfig
from loc3r.model.processor import Collator
from loc3r.model.tokenizer import build_tiny_tokenizer

WORDS = ("what is on my left right behind me how many chairs are there which closer table bed sofa window lamp "
         "door facing sitting at the near one two three").split()
QUESTIONS = ["what is on my left?", "how many chairs are there?", "which is closer the bed or the lamp?",
             "what is behind me?"]
ANSWERS = ["table", "two", "the lamp", "window"]


def make_samples(config: Loc3RConfig, n: int, seed: int = 0, cut3r_dim: int | None = None) -> list[Sample]:
    """n samples with random frames, poses and targets; sample 1 has no situation."""
    rng = np.random.default_rng(seed)
    T, S, G = config.num_frames, config.image_size, config.tokens_per_frame
    out = []
    for i in range(n):
        poses = np.tile(np.eye(4, dtype=np.float32), (T, 1, 1))
        poses[:, :3, 3] = rng.normal(size=(T, 3))
        situated = i != 1
        out.append(Sample(
            scene_id=f"scene{i:04d}_00", question_id=100 + i,
            frames=rng.integers(0, 256, (T, S, S, 3), dtype=np.uint8),
            camera_poses_bev=poses,
            layout_xy=rng.uniform(-3, 3, (T, G, 2)).astype(np.float32),
            layout_valid=rng.random((T, G)) > 0.2,
            situation=f"i am sitting at the {WORDS[12 + i]} facing the window" if situated else NO_SITUATION,
            question=QUESTIONS[i % len(QUESTIONS)], answers=[ANSWERS[i % len(ANSWERS)]],
            position_xy=(rng.uniform(-2, 2, 2) if situated else np.zeros(2)).astype(np.float32),
            yaw_rad=float(rng.uniform(-np.pi, np.pi)) if situated else 0.0, has_situation=situated,
            camera_tokens=None if cut3r_dim is None else rng.normal(size=(T, cut3r_dim)).astype(np.float32),
            frame_ids=np.arange(T) * 10, frame_times=np.arange(T) * 10 / 30.0, duration_s=T * 10 / 30.0))
    return out


@pytest.fixture(scope="module")
def setup():
    config = Loc3RConfig.tiny(num_frames=3)
    return config, build_tiny_tokenizer(WORDS)


def test_training_batch_layout(setup):
    config, tok = setup
    samples = make_samples(config, 3)
    batch = Collator(tok, config)(samples)
    B, L = batch.input_ids.shape
    assert batch.pixel_values_videos.shape == (3, 3, 3, 64, 64)
    assert batch.layout_xy.shape == (3, 3, 16, 2) and batch.layout_valid.dtype == torch.bool
    video, pos, ori = tok.convert_tokens_to_ids([VIDEO_TOKEN, POS_TOKEN, ORI_TOKEN])
    eot = tok.convert_tokens_to_ids(END_OF_TURN)
    for b, s in enumerate(samples):
        ids, labels, mask = batch.input_ids[b], batch.labels[b], batch.attention_mask[b]
        n = int(mask.sum())
        assert mask[:n].all() and not mask[n:].any()  # right padding
        run = (ids == video).nonzero().flatten()
        assert len(run) == config.video_placeholder_len == 3 * (1 + 4 * 5)  # grid: a newline after every row
        assert (run == torch.arange(run[0], run[0] + len(run))).all()  # one contiguous run
        # the situation tokens sit between the situation and the question
        assert ids[batch.pos_index[b]] == pos and ids[batch.ori_index[b]] == ori
        assert batch.ori_index[b] == batch.pos_index[b] + 1
        situation = tok(s.situation, add_special_tokens=False).input_ids
        question = tok(s.question, add_special_tokens=False).input_ids
        p = int(batch.pos_index[b])
        assert ids[p - len(situation):p].tolist() == situation
        assert ids[p + 2:p + 2 + len(question)].tolist() == question
        # labels: the answer and the end-of-turn token, nothing else
        supervised = labels != IGNORE_INDEX
        answer_ids = tok(s.answer + END_OF_TURN, add_special_tokens=False).input_ids
        assert labels[supervised].tolist() == answer_ids and answer_ids[-1] == eot
        assert ids[supervised].tolist() == answer_ids and supervised.nonzero().max() == n - 1
    assert batch.has_situation.tolist() == [True, False, True]
    assert batch.camera_tokens is None


def test_generation_batch_is_left_padded_without_answer(setup):
    config, tok = setup
    samples = make_samples(config, 3)
    batch = Collator(tok, config, for_generation=True)(samples)
    assert batch.labels is None
    assistant = tok("<|im_start|>assistant", add_special_tokens=False).input_ids
    for b in range(3):
        mask = batch.attention_mask[b]
        n = int(mask.sum())
        assert mask[-n:].all() and not mask[:-n].any()  # left padding
        assert batch.input_ids[b, -len(assistant):].tolist() == assistant  # ends with the generation prompt
        assert batch.input_ids[b, batch.pos_index[b]] == tok.convert_tokens_to_ids(POS_TOKEN)


def test_pixels_are_normalised_for_siglip(setup):
    config, tok = setup
    s = make_samples(config, 1)[0]
    s.frames[:] = 0
    s.frames[0, 0, 0] = (255, 0, 128)
    px = Collator(tok, config)([s]).pixel_values_videos  # [1, T, 3, S, S]
    assert torch.allclose(px[0, 0, :, 0, 0], torch.tensor([1.0, -1.0, 128 / 255 * 2 - 1]), atol=1e-6)
    assert px[0, 1].eq(-1).all()


def test_camera_tokens_pass_through(setup):
    config, tok = setup
    samples = make_samples(config, 2, cut3r_dim=12)
    batch = Collator(tok, config)(samples)
    assert torch.equal(batch.camera_tokens[1], torch.from_numpy(samples[1].camera_tokens))
    samples[0].camera_tokens = None
    with pytest.raises(Loc3rError, match="no cached camera tokens"):
        Collator(tok, config)(samples)


def test_bad_samples_raise_one_line_errors(setup):
    config, tok = setup
    s = make_samples(config, 1)[0]
    s.frames = s.frames[:2]
    with pytest.raises(Loc3rError, match=r"scene0000_00 question 100: frames are uint8 \(2, 64, 64, 3\)"):
        Collator(tok, config)([s])
    s = make_samples(config, 1)[0]
    s.layout_xy = s.layout_xy[:, :4]
    with pytest.raises(Loc3rError, match="frame_grid"):
        Collator(tok, config)([s])
    s = make_samples(config, 1)[0]
    s.situation = " "
    with pytest.raises(Loc3rError, match="empty situation"):
        Collator(tok, config)([s])
    s = make_samples(config, 1)[0]
    s.question = "what " * 300
    with pytest.raises(Loc3rError, match="max_text_tokens"):
        Collator(tok, config)([s])


def test_time_instruction_follows_llava_video():
    """LLaVA-Video's training prompt (LLaVA-NeXT llava/train/train.py): <video>, newline, the time instruction,
    newline, then our situation and question."""
    from loc3r.model.processor import time_instruction

    text = time_instruction(np.array([0.0, 1.0 / 3, 12.345]), 20.0)
    assert text == ("The video lasts for 20.00 seconds, and 3 frames are uniformly sampled from it. These frames are "
                    "located at 0.00s,0.33s,12.35s.Please answer the following questions related to this video.")
    tok = build_tiny_tokenizer(WORDS)
    config = Loc3RConfig.tiny(num_frames=3, time_instruction=True)
    s = make_samples(config, 1)[0]
    s.frame_times, s.duration_s = np.array([0.0, 1.5, 3.0]), 3.1
    ids = Collator(tok, config, for_generation=True)([s]).input_ids[0].tolist()
    text = tok.decode([i for i in ids if i != tok.convert_tokens_to_ids("<video>")])
    expected = (time_instruction(s.frame_times, 3.1) + " " + s.situation).lower()
    assert " ".join(tok.tokenize(expected)) in " ".join(tok.tokenize(text))
    assert tok.unk_token_id not in ids
    s.frame_times = None
    with pytest.raises(Loc3rError, match="no frame timestamps"):
        Collator(tok, config)([s])
