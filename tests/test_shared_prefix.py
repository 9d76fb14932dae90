"""Several questions per video (Collator.grouped + Loc3R.shared_prefix_pass): the video part of the LLM computed once
and shared by the questions gives the same losses and gradients as one full sequence per question."""

import dataclasses
import os

import pytest
import torch

from loc3r.errors import Loc3rError
from loc3r.model.config import Loc3RConfig
from loc3r.model.loc3r import Loc3R
from loc3r.model.processor import Collator
from loc3r.model.tokenizer import build_tiny_tokenizer
from tests.test_collate import WORDS, make_samples


def grouped_samples(config, videos: int, per_video: int):
    """`videos` groups of `per_video` questions; the questions of a group share their video's frames and targets."""
    base = make_samples(config, videos * per_video, seed=3)
    groups = []
    for v in range(videos):
        first = base[v * per_video]
        groups.append([dataclasses.replace(s, scene_id=first.scene_id, frames=first.frames,
                                           camera_poses_bev=first.camera_poses_bev, layout_xy=first.layout_xy,
                                           layout_valid=first.layout_valid, frame_ids=first.frame_ids)
                       for s in base[v * per_video:(v + 1) * per_video]])
    return groups


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = Loc3RConfig.tiny(num_frames=2)
    return Loc3R(config, build_tiny_tokenizer(WORDS)).eval()


def test_grouped_batch_equals_one_sequence_per_question(model):
    groups = grouped_samples(model.config, videos=2, per_video=3)
    collate = Collator(model.tokenizer, model.config)
    flat, grouped = collate([s for g in groups for s in g]), collate.grouped(groups)
    assert grouped.input_ids.shape[0] == 2 and grouped.suffix_ids.shape[0] == 6
    assert grouped.video_index.tolist() == [0, 0, 0, 1, 1, 1]

    results = []
    for batch in (flat, grouped):
        model.zero_grad()
        out = model(batch)
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((out, grads))
    (a, ga), (b, gb) = results
    for name in a.losses:  # the layout loss averages the same video's targets 3 times (flat) or once (grouped)
        torch.testing.assert_close(a.losses[name], b.losses[name], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a.position.mu, b.position.mu, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(a.orientation_logits, b.orientation_logits, rtol=1e-5, atol=1e-5)
    assert ga.keys() == gb.keys() and len(ga) > 20
    for name in ga:
        torch.testing.assert_close(ga[name], gb[name], rtol=1e-4, atol=1e-6, msg=name)


def test_grouping_questions_of_different_videos_is_refused(model):
    groups = grouped_samples(model.config, videos=2, per_video=2)
    with pytest.raises(Loc3rError, match="grouped with the questions of another video"):
        Collator(model.tokenizer, model.config).grouped([[groups[0][0], groups[1][0]]])


def test_grouped_generation_equals_one_sequence_per_question():
    """Many questions on one video (loc3r infer --questions): the video's prefix computed once and its cache shared
    gives the tokens, situation heads and map of answering each question alone. Questions of different lengths
    (left padding in the middle of the sequence) and two videos in one batch."""
    torch.manual_seed(0)
    config = Loc3RConfig.tiny(num_frames=2)
    config.vlm["text_config"]["initializer_range"] = 0.2  # a random model that does not repeat one token
    model = Loc3R(config, build_tiny_tokenizer(WORDS)).eval()
    groups = grouped_samples(model.config, videos=2, per_video=3)
    groups[0][1].question = groups[0][1].question + " " + groups[0][1].question  # a longer one
    collate = Collator(model.tokenizer, model.config, for_generation=True)
    together = model.generate(collate.grouped(groups), max_new_tokens=6)
    for q, s in enumerate(s for g in groups for s in g):
        alone = model.generate(collate([s]), max_new_tokens=6, use_cache=False)
        n = alone.token_ids.shape[1]
        assert together.token_ids[q, :n].tolist() == alone.token_ids[0].tolist()
        assert len(set(alone.token_ids[0].tolist())) > 1  # not one token repeated: the comparison says something
        torch.testing.assert_close(together.position.mu[q], alone.position.mu[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(together.orientation_logits[q], alone.orientation_logits[0], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(together.layout.mu[q], alone.layout.mu[0], rtol=1e-4, atol=1e-5)


def prompts_to_hide():
    """A randomly initialised tiny model whose answers depend on its inputs (a wide initialisation), two videos of two
    questions, and a collator of prompts."""
    torch.manual_seed(0)
    config = Loc3RConfig.tiny(num_frames=2)
    config.vlm["text_config"]["initializer_range"] = 0.2
    model = Loc3R(config, build_tiny_tokenizer(WORDS)).eval()
    groups = grouped_samples(model.config, videos=2, per_video=2)
    return model, groups, Collator(model.tokenizer, model.config, for_generation=True)


def test_hidden_situation_tokens_reach_no_other_token():
    """The control of `eval --hide-situation-tokens`: with <Pos> / <Ori> hidden, the states that predict the answer
    (the LM head's inputs at every decoding step) do not change when those two tokens are replaced by other words,
    in a grouped batch and one sequence per question alike, and equal between the two; shown, they change."""
    model, groups, collate = prompts_to_hide()
    other = model.tokenizer.convert_tokens_to_ids(WORDS[0])

    def answer_states(batch, hide):
        seen = []
        handle = model.vlm.lm_head.register_forward_hook(lambda m, args, out: seen.append(args[0].clone()))
        try:
            model.generate(batch, max_new_tokens=4, hide_situation_tokens=hide)
        finally:
            handle.remove()
        return torch.cat(seen, -1)  # [B, steps * D]

    def replaced(batch):  # <Pos> / <Ori> read as another word
        ids = (batch.suffix_ids if batch.grouped else batch.input_ids).clone()
        rows = torch.arange(len(ids))
        ids[rows, batch.pos_index] = other
        ids[rows, batch.ori_index] = other
        return dataclasses.replace(batch, **{"suffix_ids" if batch.grouped else "input_ids": ids})

    grouped, flat = collate.grouped(groups), collate([s for g in groups for s in g])
    for batch in (grouped, flat):
        torch.testing.assert_close(answer_states(batch, True), answer_states(replaced(batch), True))
        assert not torch.allclose(answer_states(batch, False), answer_states(replaced(batch), False), atol=1e-3)
    torch.testing.assert_close(answer_states(grouped, True), answer_states(flat, True), rtol=1e-4, atol=1e-4)


def test_hidden_situation_tokens_leave_the_localization_as_it_is():
    """The control changes what the answers read, not the situation heads: with <Pos> / <Ori> hidden the position,
    orientation and layout equal those of the unhidden run, in a grouped batch and one sequence per question alike.
    The prompt pass with the keys masked would not give them (<Pos> would not attend to itself)."""
    model, groups, collate = prompts_to_hide()
    for batch in (collate.grouped(groups), collate([s for g in groups for s in g])):
        shown = model.generate(batch, max_new_tokens=2)
        hidden = model.generate(batch, max_new_tokens=2, hide_situation_tokens=True)
        for a, b in ((hidden.position.mu, shown.position.mu), (hidden.position.log_sigma, shown.position.log_sigma),
                     (hidden.orientation_logits, shown.orientation_logits), (hidden.layout.mu, shown.layout.mu)):
            torch.testing.assert_close(a, b)
        with torch.no_grad():
            masked = model.prompt_pass(batch, True, True)[0]
            position, orientation_logits = model.situation_heads(masked.last_hidden_state, batch)
        assert not torch.allclose(position.mu, shown.position.mu, atol=1e-3)
        assert not torch.allclose(orientation_logits, shown.orientation_logits, atol=1e-3)


def test_grouped_query_attention_on_a_cpu_equals_the_repeated_keys(model, monkeypatch):
    """parallel.grouped_query_attention: on a CPU the LLM's attention runs as SDPA's own grouped-query attention
    instead of transformers' keys and values repeated per query head: the same losses and gradients, and the keys
    are no longer repeated (the padded questions' masks are given)."""
    from transformers.integrations import sdpa_attention

    from loc3r import parallel

    monkeypatch.delenv("TRANSFORMERS_SDPA_FORCE_GQA", raising=False)
    assert parallel.default_device("cpu").type == "cpu"
    assert os.environ["TRANSFORMERS_SDPA_FORCE_GQA"] == "1"
    repeats = []
    real = sdpa_attention.repeat_kv
    monkeypatch.setattr(sdpa_attention, "repeat_kv", lambda x, n: repeats.append(n) or real(x, n))
    groups = grouped_samples(model.config, videos=2, per_video=3)
    batch = Collator(model.tokenizer, model.config).grouped(groups)
    assert not batch.suffix_mask.all()  # questions of different lengths: a mask is given
    results = []
    for force in ("0", "1"):
        monkeypatch.setenv("TRANSFORMERS_SDPA_FORCE_GQA", force)
        repeats.clear()
        model.zero_grad()
        out = model(batch)
        out.loss.backward()
        results.append((out.losses, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None},
                        len(repeats)))
    (a, ga, ra), (b, gb, rb) = results
    assert ra > 0 and rb == 0
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-6, atol=1e-6)
    assert ga.keys() == gb.keys() and len(ga) > 20
    for name in ga:
        torch.testing.assert_close(ga[name], gb[name], rtol=1e-5, atol=1e-6, msg=name)
