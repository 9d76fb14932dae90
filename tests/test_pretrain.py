"""The tiny base's pretraining (`loc3r pretrain-base`) and `train --init`: which object a vision token sees, the
vision-token word loss against a brute-force reference, grounding questions, and a base that a run starts from."""

import copy
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from loc3r.cli import main
from loc3r.model.config import Loc3RConfig
from loc3r.model.processor import Collator
from loc3r.synth.grounding import READING_QUESTIONS, grounding_questions, reading_questions, token_objects
from loc3r.synth.scene import Scene
from loc3r.tiny import TinyBaseConfig, TinyLoc3R
from loc3r.tiny import losses as tiny_losses
from loc3r.tiny.grounding_data import READINGS_PER_ROOM, GroundingDataset, grounding_records
from loc3r.tiny.init import read_base


def room(objects):
    return Scene.from_json({"scene_id": "scene0000_00", "scene_type": "Bedroom", "style": "basic",
                            "room": {"outline_xy": [[0, 0], [5, 0], [5, 4], [0, 4]], "height_m": 2.5,
                                     "floor_rgb": [1, 2, 3], "wall_rgb": [4, 5, 6], "ceiling_rgb": [7, 8, 9],
                                     "openings": []},
                            "objects": objects})


BED = {"id": 0, "category": "bed", "color": "red", "center": [1.0, 1.0, 0.3], "size": [2.0, 1.0, 0.6],
       "yaw": np.pi / 2, "on_top_of": None}
CAN = {"id": 1, "category": "trash can", "color": "blue", "center": [4.0, 3.0, 0.2], "size": [0.3, 0.3, 0.4],
       "yaw": 0.0, "on_top_of": None}


def test_token_objects_are_the_footprints_holding_the_points():
    scene = room([BED, CAN])
    # the bed turned 90 degrees: it spans x 0.5..1.5, y 0..2; the can x 3.85..4.15, y 2.85..3.15
    points = np.array([[1.0, 1.9], [1.45, 0.1], [1.6, 1.0], [1.53, 1.0], [4.0, 3.0], [4.21, 3.0], [3.0, 3.0],
                       [1.0, 1.0]])
    valid = np.array([True, True, True, True, True, True, True, False])
    assert token_objects(scene, points, valid).tolist() == [0, 0, -1, 0, 1, -1, -1, -1]
    assert token_objects(scene, points.reshape(2, 4, 2), valid.reshape(2, 4)).shape == (2, 4)


def test_grounding_questions_are_answered_by_the_room():
    scene = room([BED, CAN])
    qa = grounding_questions(scene, np.random.default_rng(0), choices=True)
    assert qa[:-2] == grounding_questions(room([BED, CAN]), np.random.default_rng(0))  # the choices come last
    assert ("What is the red object?", "bed", "other") in qa and ("What color is the trash can?", "blue", "other") in qa
    lists = [a for q, a, _ in qa if q == "What objects are in the room?"]
    assert sorted(lists[0].replace("trash can", "trash_can").split()) == ["bed", "blue", "red", "trash_can"]
    assert ("How many objects are there in the room?", "two", "number") in qa
    exists = {q: a for q, a, _ in qa if q.startswith("Is there")}
    assert exists["Is there a bed in the room?"] == "yes" and list(exists.values()).count("no") == 2
    # one choice per object: its name against a decoy that shares a word with it and names nothing in the room
    names = {"red bed", "blue trash can"}
    choices = [(q, a) for q, a, _ in qa if q.startswith("Which is in the room")]
    assert sorted(a for _, a in choices) == sorted(names)
    for q, a in choices:
        first, second = q.removeprefix("Which is in the room, the ").removesuffix("?").split(" or the ")
        decoy = second if first == a else first
        assert a in (first, second) and decoy not in names
        assert set(decoy.split()) & set(a.split())
    with pytest.raises(ValueError, match="basic room"):
        grounding_questions(room([BED, {**CAN, "color": "red"}]), np.random.default_rng(0))


def test_reading_questions_are_answered_by_the_situation_text(synth_data):
    records, scenes = grounding_records(synth_data, "train", 0, copy_questions=True)
    reading = [r for r in records if r.question in {q for q, _, _ in READING_QUESTIONS}]
    assert len(reading) == READINGS_PER_ROOM * len(scenes)
    for r in reading:
        a, b = (scenes[r.scene_id].objects[i] for i in r.extra["situation_objects"])
        assert f"{a.color} {a.category}" in r.extra["situation"] and f"{b.color} {b.category}" in r.extra["situation"]
        slot = a if "next to" in r.question else b
        assert r.answers == [slot.color if r.question.startswith("What color") else slot.category]
    text, (i, j) = reading[0].extra["situation"], reading[0].extra["situation_objects"]
    assert reading_questions(scenes[reading[0].scene_id], i, j)[0][1] in text


def test_seeing_loss_equals_a_brute_force_reference():
    torch.manual_seed(0)
    config = Loc3RConfig.tiny(num_frames=2, prior="none")
    model = TinyLoc3R(config)
    T, G, D = 2, config.tokens_per_frame, config.hidden_size
    vision, states = torch.randn(1, T, G, D), torch.randn(1, T, G, D)
    words = torch.full((1, T, G, 3), -100)
    words[0, 0, 3] = torch.tensor([10, 11, 12])
    words[0, 1, 5, :2] = torch.tensor([13, 14])
    got = tiny_losses.seeing_loss(model, vision, states, words, None)
    table = model.vlm.get_input_embeddings().weight
    total, n = 0.0, 0
    for t in range(T):
        for g in range(G):
            for w in words[0, t, g].tolist():
                if w == -100:
                    continue
                total -= torch.log_softmax(table @ vision[0, t, g], 0)[w]
                total -= torch.log_softmax(model.vlm.lm_head.weight @ states[0, t, g], 0)[w]
                n += 1
    assert n == 5 and torch.allclose(got, total / n, atol=1e-5)


def test_pretrained_base_starts_a_run(synth_data, tmp_path):
    base_run = tmp_path / "base"
    assert main(["pretrain-base", "--data", str(synth_data), "--out", str(base_run), "--steps", "2",
                 "--batch-size", "2", "--questions-per-video", "4", "--quiet"]) == 0
    log = [json.loads(line) for line in (base_run / "log.jsonl").read_text().splitlines()]
    assert log[-1]["seeing"] > 0 and log[-1]["position"] == 0 and log[-1]["orientation"] == 0
    base = base_run / "checkpoints" / "step_0000002"
    assert read_base(base)[0].prior == "none"  # the base never sees a pose

    # the samples carry the words of what their vision tokens see
    records, scenes = grounding_records(synth_data, "train", 0)
    from loc3r.model.processor import make_dataset
    from loc3r.model.tokenizer import load_tokenizer

    config = Loc3RConfig.tiny(prior="none")
    data = GroundingDataset(make_dataset(config, synth_data, "train", None, records), scenes)
    tokenizer = load_tokenizer(base)
    data.bind(tokenizer)
    sample = data[0]
    seen = sample.token_words[sample.token_words[..., 0] != -100]
    assert len(seen) > 0
    names = {f"{o.color} {o.category}" for o in scenes[sample.scene_id].objects}
    assert {tokenizer.decode([w for w in row if w != -100]) for row in seen.tolist()} <= names
    batch = Collator(tokenizer, config).grouped([[data[0], data[1]]])
    assert batch.token_words.shape == (1, config.num_frames, config.tokens_per_frame, 3)

    # train --init: the base's tensors and tokenizer, the camera projector (which the base lacks) fresh
    run = tmp_path / "run"
    assert main(["train", "--data", str(synth_data), "--out", str(run), "--steps", "1", "--batch-size", "2",
                 "--init", str(base), "--lr", "1e-12", "--quiet"]) == 0
    start, trained = load_file(str(base / "model.safetensors")), load_file(str(run / "checkpoints" / "step_0000001"
                                                                                / "model.safetensors"))
    assert any(k.startswith("camera_projector") for k in set(trained) - set(start))
    for k in start:
        assert torch.allclose(start[k], trained[k], atol=1e-6), k
    assert (run / "checkpoints" / "step_0000001" / "tokenizer.json").read_text() == (base / "tokenizer.json").read_text()

    # pretrain-base --init: the pretraining continued from a base (its weights, tokenizer and grounding heads)
    more = tmp_path / "more"
    assert main(["pretrain-base", "--data", str(synth_data), "--out", str(more), "--steps", "1", "--batch-size", "2",
                 "--questions-per-video", "4", "--init", str(base), "--lr", "1e-12", "--quiet"]) == 0
    continued = more / "checkpoints" / "step_0000001"
    assert set(load_file(str(continued / "model.safetensors"))) == set(start)
    for k, v in load_file(str(continued / "model.safetensors")).items():
        assert torch.allclose(start[k], v, atol=1e-6), k
    config, settings = read_base(continued)
    assert config.prior == "none" and settings.anchor_layer == read_base(base)[1].anchor_layer
    assert (continued / "tokenizer.json").read_text() == (base / "tokenizer.json").read_text()


def losses_and_eager_attention(model, samples):
    """The losses of the samples as one grouped batch (shared prefix) and as whole sequences, the whole-sequence
    batch, and the LLM's eager run over it (attention weights and hidden states of every layer)."""
    collate = Collator(model.tokenizer, model.config)
    with torch.no_grad():
        grouped = model(collate.grouped([samples])).losses
        flat_batch = collate(samples)
        flat = model(flat_batch).losses
        lm = model.vlm.model.language_model
        lm.config._attn_implementation = "eager"
        out = lm(inputs_embeds=model.embed_inputs(flat_batch), attention_mask=flat_batch.attention_mask,
                 output_attentions=True, output_hidden_states=True)
    return grouped, flat, flat_batch, out


def test_grounding_attention_loss_equals_the_layers_own_attention(synth_data):
    """The grounding loss of a grouped batch (shared prefix) and of the same questions as whole sequences equals
    -log(attention mass on the named object's vision tokens), read from the layer's eager attention weights; the
    <Pos> / <Ori> tokens ground to the objects their situation names."""
    from loc3r.model.processor import make_dataset
    from loc3r.train.loop import tiny_tokenizer

    torch.manual_seed(0)
    config = Loc3RConfig.tiny(prior="none")
    records, scenes = grounding_records(synth_data, "train", 0)
    data = GroundingDataset(make_dataset(config, synth_data, "train", None, records), scenes)
    model = TinyLoc3R(config, tiny_tokenizer(data), TinyBaseConfig(lambda_seeing=0.0)).eval()
    base = model.base
    data.bind(model.tokenizer)
    samples = [data[i] for i in range(6)]  # one room's questions: which object, which colour, ...
    assert len({s.scene_id for s in samples}) == 1 and all(s.situation.startswith("I am") for s in samples)
    grouped, flat, flat_batch, out = losses_and_eager_attention(model, samples)
    probs = out.attentions[base.grounding_layer][:, base.grounding_head]  # [B, L, L]
    ids, words = flat_batch.input_ids, flat_batch.token_words.flatten(1, 2)  # [B, L], [B, T * n, 3]
    video = (ids[0] == config.video_token_id).nonzero().squeeze(1)
    vision_positions = video[torch.from_numpy(config.vision_token_slots().reshape(-1))]
    losses, grounded_situation_tokens = [], 0
    for b in range(len(samples)):
        for i in range(ids.shape[1]):
            if not flat_batch.attention_mask[b, i] or ids[b, i] == config.video_token_id:
                continue
            word = ids[b, i]  # <Pos> / <Ori>: the colour of the object the situation names
            situation_token = i == flat_batch.pos_index[b] or i == flat_batch.ori_index[b]
            if situation_token:
                word = flat_batch.situation_words[b, int(i == flat_batch.ori_index[b])]
            sees = (words[b] == word).any(-1)  # vision tokens seeing an object of this word
            if sees.any():
                losses.append(-torch.log(probs[b, i, vision_positions[sees]].sum()))
                grounded_situation_tokens += situation_token
    assert len(losses) >= 6 and grounded_situation_tokens >= 6  # the questions and situations name objects
    reference = torch.stack(losses).mean()
    assert torch.allclose(flat["grounding"], reference, atol=1e-4)
    assert torch.allclose(grouped["grounding"], reference, atol=1e-4)
    # the anchor head: only <Ori>, to the tokens of the object the speaker stands by
    probs = out.attentions[base.anchor_layer][:, base.anchor_head]
    anchor = [-torch.log(probs[b, flat_batch.ori_index[b], vision_positions[sees]].sum())
              for b in range(len(samples)) if (sees := (words[b] == flat_batch.situation_words[b, 0]).any(-1)).any()]
    assert len(anchor) >= 3
    reference = torch.stack(anchor).mean()
    assert torch.allclose(flat["anchor"], reference, atol=1e-4)
    assert torch.allclose(grouped["anchor"], reference, atol=1e-4)


def test_copy_attention_loss_equals_the_layers_own_attention(synth_data):
    """The copy losses (pretrain-base --copy-questions) of a grouped batch and of the same questions as whole
    sequences equal, from the layer's eager attention weights, -log(attention mass) of each state predicting an
    answer word on the places that word stands in the prompt, and the cross-entropy of that word read from the
    head's output (a brute-force loop over the positions); the total loss weighs them by lambda_copy."""
    from loc3r.model.processor import make_dataset
    from loc3r.train.loop import tiny_tokenizer

    torch.manual_seed(0)
    config = Loc3RConfig.tiny(prior="none")
    records, scenes = grounding_records(synth_data, "train", 0, copy_questions=True)
    data = GroundingDataset(make_dataset(config, synth_data, "train", None, records), scenes)
    settings = TinyBaseConfig(lambda_seeing=0.0, copy_layer=-1, copy_head=3)
    model = TinyLoc3R(config, tiny_tokenizer(data), settings).eval()
    base = model.base
    data.bind(model.tokenizer)
    scene = data[0].scene_id
    samples = [data[i] for i, r in enumerate(data.records) if r.scene_id == scene][-12:]  # choices and readings
    grouped, flat, flat_batch, out = losses_and_eager_attention(model, samples)
    with torch.no_grad():
        lm = model.vlm.model.language_model
        # the head's output: its attention over its values (the layer's normed input through v_proj), through its
        # columns of o_proj, read through the LM head
        layer = lm.layers[base.copy_layer]
        d = layer.self_attn.head_dim
        group = config.vlm["text_config"]["num_attention_heads"] // config.vlm["text_config"]["num_key_value_heads"]
        values = layer.self_attn.v_proj(layer.input_layernorm(out.hidden_states[base.copy_layer]))
        values = values[..., (base.copy_head // group) * d:(base.copy_head // group + 1) * d]  # [B, L, d]
        o_proj = layer.self_attn.o_proj.weight[:, base.copy_head * d:(base.copy_head + 1) * d]
    probs = out.attentions[base.copy_layer][:, base.copy_head]  # [B, L, L]
    ids, labels, mask = flat_batch.input_ids, flat_batch.labels, flat_batch.attention_mask
    special = set(model.tokenizer.all_special_ids)
    where, what = [], []
    for b in range(len(samples)):
        for j in range(ids.shape[1]):
            word = int(labels[b, j])
            if word == -100 or word in special:
                continue
            at = [k for k in range(j) if mask[b, k] and labels[b, k] == -100 and ids[b, k] == word]
            if at:
                where.append(-torch.log(probs[b, j - 1, at].sum()))
                logits = model.vlm.lm_head((probs[b, j - 1] @ values[b]) @ o_proj.T)
                what.append(torch.nn.functional.cross_entropy(logits[None], labels[b, j][None]))
    assert len(where) >= 10  # the choices' two words, the readings' one
    for name, reference in (("copy", torch.stack(where).mean()), ("copy_output", torch.stack(what).mean())):
        assert torch.allclose(flat[name], reference, rtol=2e-4, atol=1e-4), name
        assert torch.allclose(grouped[name], reference, rtol=2e-4, atol=1e-4), name
    # the total weighs both by lambda_copy (pretrain-base --copy-weight), not by the grounding's weight
    totals = {}
    for weight in (1.0, 0.25):
        model.base.lambda_copy = weight
        with torch.no_grad():
            totals[weight] = model(Collator(model.tokenizer, model.config)(samples)).loss
    copy = flat["copy"] + flat["copy_output"]
    assert torch.allclose(totals[1.0] - totals[0.25], 0.75 * copy, rtol=1e-4, atol=1e-5)


def test_a_run_from_a_base_fine_tunes_its_weights_gently(synth_data, tmp_path):
    """From a base: the vision tower frozen (as the paper's SigLIP), the base's weights at --init-lr (default
    0.3 x --lr), what the base never trained (camera projector, heads) at --lr; from scratch: one group."""
    from loc3r.tiny.init import NEW_ON_A_BASE, model_from_base
    from loc3r.train.config import TrainConfig, model_config
    from loc3r.train.loop import parameter_groups

    base_run = tmp_path / "base"
    assert main(["pretrain-base", "--data", str(synth_data), "--out", str(base_run), "--steps", "1",
                 "--batch-size", "1", "--questions-per-video", "2", "--quiet"]) == 0
    base = base_run / "checkpoints" / "step_0000001"
    run = TrainConfig(data=str(synth_data), out=tmp_path / "run", init=str(base))
    model = model_from_base(run.init_base, model_config(run))
    assert not any(p.requires_grad for p in model.vlm.model.vision_tower.parameters())
    pretrained, new = parameter_groups(model, 1e-3, run)
    assert pretrained["lr"] == pytest.approx(3e-4) and "lr" not in new
    fresh = {id(p) for p in new["params"]}
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert len(pretrained["params"]) + len(new["params"]) == len(named)
    assert all((id(p) in fresh) == n.startswith(NEW_ON_A_BASE) for n, p in named)  # no LoRA here
    assert any(n.startswith("camera_projector.") for n, p in named if id(p) in fresh)
    scratch = TrainConfig(data=str(synth_data), out=tmp_path / "run", init="scratch")
    assert scratch.init_base is None and len(parameter_groups(model, 1e-3, scratch)) == 1


def test_layers_added_to_a_base_start_as_the_identity(synth_data):
    """--added-layers 1 on the shipped base: an LLM one layer deeper whose losses on a batch equal the base's (every
    tensor both have copied over), the base's heads in the layers they were (absolute indices), the new layer's
    attention and MLP output projections zero and the rest of it drawn (not zero), learning at the full rate."""
    from loc3r.model.processor import make_dataset
    from loc3r.tiny.init import NEW_ON_A_BASE, model_from_base
    from loc3r.train.config import TINY_BASE, TrainConfig, model_config
    from loc3r.train.loop import parameter_groups

    run = TrainConfig(data=str(synth_data), out="o")
    plain = model_from_base(TINY_BASE, model_config(run)).eval()
    deeper = model_from_base(TINY_BASE, model_config(run), added_layers=1).eval()
    n = len(plain.vlm.model.language_model.layers)
    assert len(deeper.vlm.model.language_model.layers) == n + 1
    assert deeper.vlm.config.text_config.num_hidden_layers == n + 1
    assert (deeper.base.grounding_layer, deeper.base.anchor_layer) == (plain.base.grounding_layer % n,
                                                                      plain.base.anchor_layer % n)
    new = deeper.vlm.model.language_model.layers[n]
    assert not new.self_attn.o_proj.weight.any() and not new.mlp.down_proj.weight.any()
    assert new.self_attn.q_proj.weight.std() > 0 and new.mlp.up_proj.weight.std() > 0
    missing = deeper.load_state_dict(plain.state_dict(), strict=False).missing_keys  # the fresh camera projector too
    assert missing and all(f"layers.{n}." in k for k in missing)
    data = make_dataset(plain.config, synth_data, "train")
    batch = Collator(plain.tokenizer, plain.config)([data[i] for i in range(4)])
    with torch.no_grad():
        a, b = plain(batch).losses, deeper(batch).losses
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-5) for k in a)
    # the added layer learns at the full rate, as the other parts the base never trained
    _, fresh = parameter_groups(deeper, 1e-3, TrainConfig(data=str(synth_data), out="o", added_layers=1))
    fresh = {id(p) for p in fresh["params"]}
    trained = [(k, p) for k, p in deeper.named_parameters() if p.requires_grad]
    assert all((id(p) in fresh) == (f"layers.{n}." in k or k.startswith(NEW_ON_A_BASE)) for k, p in trained)


def test_a_deeper_model_run_at_the_bases_depth_is_the_model_without_its_added_layers(synth_data):
    """TinyLoc3R.depth (--added-layers-join before the join): a model with two layers added (and made to differ from
    the identity) run through its first layers only gives the losses and gradients of the same model with the added
    layers removed, on the shared-prefix pass too; the added layers get no gradient; depth None runs them all."""
    from loc3r.model.processor import make_dataset
    from loc3r.tiny.init import model_from_base
    from loc3r.train.config import TINY_BASE, TrainConfig, model_config

    run = TrainConfig(data=str(synth_data), out="o")
    torch.manual_seed(0)
    deeper = model_from_base(TINY_BASE, model_config(run), added_layers=2)
    llm = deeper.vlm.model.language_model
    n = len(llm.layers) - 2
    with torch.no_grad():
        for layer in llm.layers[n:]:
            layer.mlp.down_proj.weight.normal_(0, 0.05)
    shallow = copy.deepcopy(deeper)
    shallow.vlm.model.language_model.layers = shallow.vlm.model.language_model.layers[:n]
    shallow.vlm.model.language_model.config.num_hidden_layers = n
    data = make_dataset(deeper.config, synth_data, "train")
    collate = Collator(deeper.tokenizer, deeper.config)
    items = [data[i] for i in range(4)]
    for batch in (collate(items), collate.grouped([items[:2]])):  # data[0] and data[1]: one video's questions
        full = deeper(batch).loss
        deeper.depth = n
        out, ref = deeper(batch), shallow(batch)
        out.loss.backward()
        ref.loss.backward()
        deeper.depth = None
        assert not torch.allclose(full, ref.loss) and torch.allclose(out.loss, ref.loss)
        assert all(p.grad is None for p in llm.layers[n:].parameters())
        grads = dict(shallow.named_parameters())
        for name, p in deeper.named_parameters():
            if p.grad is not None:
                assert torch.allclose(p.grad, grads[name].grad, atol=1e-6), name
        assert llm.config.num_hidden_layers == n + 2  # restored
        deeper.zero_grad(set_to_none=True)
        shallow.zero_grad(set_to_none=True)


def test_a_bases_text_embedding_scale_multiplies_its_text_tokens_only_and_travels_with_it(synth_data, tmp_path):
    """pretrain-base --embed-scale S: the LLM's inputs are the scale-1 model's with every text token's embedding
    times S and the video block unchanged; the LM head reads the table unscaled; a run from the base (train --init)
    and a continued pretraining keep S, and a continuation given another scale takes it."""
    from loc3r.model.processor import make_dataset
    from loc3r.tiny.init import model_from_base
    from loc3r.train.config import TrainConfig, model_config

    base_run = tmp_path / "base"
    assert main(["pretrain-base", "--data", str(synth_data), "--out", str(base_run), "--steps", "1",
                 "--batch-size", "1", "--questions-per-video", "2", "--embed-scale", "4", "--quiet"]) == 0
    base = base_run / "checkpoints" / "step_0000001"
    assert read_base(base)[1].text_embed_scale == 4
    run = TrainConfig(data=str(synth_data), out=tmp_path / "run", init=str(base))
    scaled = model_from_base(run.init_base, model_config(run)).eval()
    plain = model_from_base(run.init_base, model_config(run), {"text_embed_scale": 1.0}).eval()
    assert scaled.base.text_embed_scale == 4 and plain.base.text_embed_scale == 1
    plain.load_state_dict(scaled.state_dict())
    data = make_dataset(scaled.config, synth_data, "train", None)
    batch = Collator(scaled.tokenizer, scaled.config)([data[0], data[1]])
    with torch.no_grad():
        a, b = scaled.embed_inputs(batch), plain.embed_inputs(batch)
    video = (batch.input_ids == scaled.config.video_token_id)[..., None]
    assert torch.equal(torch.where(video, a, a / 4), torch.where(video, b, b))
    assert torch.equal(scaled.vlm.lm_head.weight, plain.vlm.get_input_embeddings().weight)
    assert main(["train", "--data", str(synth_data), "--out", str(tmp_path / "run"), "--init", str(base),
                 "--steps", "1", "--batch-size", "1", "--quiet"]) == 0
    assert read_base(tmp_path / "run" / "checkpoints" / "step_0000001")[1].text_embed_scale == 4
    for flags, scale in (([], 4), (["--embed-scale", "2"], 2)):  # a continued pretraining: the base's, or its own
        more = tmp_path / f"more{scale}"
        assert main(["pretrain-base", "--data", str(synth_data), "--out", str(more), "--steps", "1", "--batch-size",
                     "1", "--questions-per-video", "2", "--init", str(base), *flags, "--quiet"]) == 0
        assert read_base(more / "checkpoints" / "step_0000001")[1].text_embed_scale == scale


def test_a_run_from_a_base_keeps_where_its_grounding_heads_look(synth_data, tmp_path):
    """Two training steps from a base (pretrained with --copy-questions: a copy head too) change no query row of its
    grounding and anchor heads (layer 2 head 0, layer 3 head 1), and do change the key rows of their key/value heads
    and the other rows of the same projections, the copy head's (layer 3 head 3) and its key/value head's among
    them: the Loc3R stage trains the copy head with its LM loss."""
    base_run, run = tmp_path / "base", tmp_path / "run"
    assert main(["pretrain-base", "--data", str(synth_data), "--out", str(base_run), "--steps", "1",
                 "--batch-size", "1", "--questions-per-video", "2", "--copy-questions", "--quiet"]) == 0
    base = base_run / "checkpoints" / "step_0000001"
    assert main(["train", "--data", str(synth_data), "--out", str(run), "--init", str(base), "--steps", "2",
                 "--batch-size", "2", "--quiet"]) == 0
    config, settings = read_base(base)
    assert (settings.copy_layer, settings.copy_head) == (-1, 3)
    start = load_file(str(base / "model.safetensors"))
    trained = load_file(str(run / "checkpoints" / "step_0000002" / "model.safetensors"))
    assert_kept_heads(config, start, trained, [(settings.grounding_layer, settings.grounding_head),
                                               (settings.anchor_layer, settings.anchor_head)], keys=False)
    d = config.vlm["text_config"]["hidden_size"] // config.vlm["text_config"]["num_attention_heads"]
    for proj, h in (("q_proj", 3), ("k_proj", 1)):  # the copy head, its key/value head
        key = f"vlm.model.language_model.layers.3.self_attn.{proj}.weight"
        assert not torch.equal(start[key][h * d:(h + 1) * d], trained[key][h * d:(h + 1) * d]), key


def assert_kept_heads(config, start, trained, heads, keys=True):
    """The q_proj rows of `heads` [(layer, head)] and (keys) the k_proj rows of their key/value heads are equal in
    the two state dicts; every other row of those projections changed."""
    text = config.vlm["text_config"]
    d = text["hidden_size"] // text["num_attention_heads"]
    group = text["num_attention_heads"] // text["num_key_value_heads"]
    layers = {layer % text["num_hidden_layers"] for layer, _ in heads}
    for layer in layers:
        for proj in ("q_proj", "k_proj"):
            for kind in ("weight", "bias"):
                key = next(k for k in start if k.endswith(f"layers.{layer}.self_attn.{proj}.{kind}"))
                rows = torch.zeros(len(start[key]), dtype=torch.bool)
                for h_layer, head in heads:
                    if h_layer % text["num_hidden_layers"] == layer and (proj == "q_proj" or keys):
                        h = head if proj == "q_proj" else head // group
                        rows[h * d:(h + 1) * d] = True
                assert torch.equal(start[key][rows], trained[key][rows]), key
                if not rows.all():
                    changed = (start[key][~rows] != trained[key][~rows]).flatten(1).any(1) if kind == "weight" \
                        else start[key][~rows] != trained[key][~rows]
                    assert changed.float().mean() > 0.5, key


def test_a_base_continued_with_copy_questions_trains_a_copy_head(synth_data, tmp_path):
    """pretrain-base --init BASE --copy-questions: the copy loss is on, the new copy head (layer 3 head 3) learns,
    the base's grounding and anchor heads stay where they looked."""
    base_run, more = tmp_path / "base", tmp_path / "more"
    assert main(["pretrain-base", "--data", str(synth_data), "--out", str(base_run), "--steps", "1",
                 "--batch-size", "1", "--questions-per-video", "2", "--quiet"]) == 0
    base = base_run / "checkpoints" / "step_0000001"
    assert read_base(base)[1].copy_layer is None  # off without --copy-questions
    assert main(["pretrain-base", "--data", str(synth_data), "--out", str(more), "--steps", "2", "--batch-size", "2",
                 "--questions-per-video", "8", "--init", str(base), "--copy-questions", "--quiet"]) == 0
    continued = more / "checkpoints" / "step_0000002"
    config, settings = read_base(continued)
    assert (settings.copy_layer, settings.copy_head) == (-1, 3)
    log = [json.loads(line) for line in (more / "log.jsonl").read_text().splitlines()]
    assert log[-1]["copy"] > 0
    start = load_file(str(base / "model.safetensors"))
    trained = load_file(str(continued / "model.safetensors"))
    assert_kept_heads(config, start, trained, [(settings.grounding_layer, settings.grounding_head),
                                               (settings.anchor_layer, settings.anchor_head)])
    text = config.vlm["text_config"]
    d = text["hidden_size"] // text["num_attention_heads"]
    q = next(k for k in start if k.endswith("layers.3.self_attn.q_proj.weight"))
    assert not torch.equal(start[q][3 * d:4 * d], trained[q][3 * d:4 * d])


@pytest.mark.parametrize("flags, message", [(["--embed-scale", "0"], "--embed-scale must be > 0"),
                                            (["--copy-questions", "--copy-weight", "-1"], "--copy-weight must be >= 0"),
                                            (["--copy-weight", "2"], "it needs --copy-questions")])
def test_bad_pretrain_settings_are_refused(synth_data, tmp_path, capsys, flags, message):
    """A text scale of zero or below, a negative copy weight, or a copy weight without the copy questions: one line,
    exit 2, nothing written."""
    run = tmp_path / "base"
    assert main(["pretrain-base", "--data", str(synth_data), "--out", str(run), "--steps", "1", "--quiet", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not run.exists()


def test_relation_attention_loss_equals_the_layers_own_attention(synth_data):
    """The relation heads' losses (train --relation-weight) of a grouped batch and of the same questions as whole
    sequences equal, from the last layer's eager attention weights, -log(attention mass) of each state predicting a
    situated answer token on the question's object names, on <Pos> and on <Ori> (three heads), averaged; the
    total weighs them by lambda_relation; off, the forward is the paper's."""
    from loc3r.model.processor import make_dataset
    from loc3r.train.loop import tiny_tokenizer

    torch.manual_seed(0)
    config = Loc3RConfig.tiny(prior="none")
    data = make_dataset(config, synth_data, "train")
    model = TinyLoc3R(config, tiny_tokenizer(data), TinyBaseConfig(relation_layer=-1)).eval()
    scene = data.records[0].scene_id
    every = [data[i] for i, r in enumerate(data.records) if r.scene_id == scene]
    samples = [s for s in every if s.has_situation][:9] + [s for s in every if not s.has_situation][:3]
    assert len(samples) == 12
    grouped, flat, flat_batch, out = losses_and_eager_attention(model, samples)
    names = set(model.name_ids().tolist())
    ids, labels = flat_batch.input_ids, flat_batch.labels
    references = {}
    for name, head in zip(("relation_names", "relation_pos", "relation_ori"), model.base.relation_heads):
        probs = out.attentions[-1][:, head]  # [B, L, L]
        losses = []
        for b, sample in enumerate(samples):
            ori, pos = int(flat_batch.ori_index[b]), int(flat_batch.pos_index[b])
            for j in range(ids.shape[1]):
                if labels[b, j] == -100 or not sample.has_situation:
                    continue
                at = ({"relation_pos": [pos], "relation_ori": [ori]}.get(name) or
                      [k for k in range(ori + 1, j) if int(ids[b, k]) in names and labels[b, k] == -100])
                if at:
                    losses.append(-torch.log(probs[b, j - 1, at].sum()))
        assert len(losses) >= 6
        references[name] = torch.stack(losses).mean()
        assert torch.allclose(flat[name], references[name], rtol=2e-4, atol=1e-4), name
        assert torch.allclose(grouped[name], references[name], rtol=2e-4, atol=1e-4), name
    totals = {}
    for weight in (1.0, 0.25, 0.0):
        model.base.lambda_relation = weight
        with torch.no_grad():
            output = model(Collator(model.tokenizer, model.config)(samples))
        totals[weight] = output.loss
    assert torch.allclose(totals[1.0] - totals[0.25], 0.75 * sum(references.values()), rtol=1e-4, atol=1e-5)
    assert "relation_names" not in output.losses  # weight 0: the paper's forward


@pytest.mark.parametrize("mode", ["pose", "egocentric", "staged"])
def test_relation_readout_is_the_pose_read_from_the_answers_state(synth_data, mode):
    """--relation-readout: the final state predicting each situated question's first answer token, read by the
    position and orientation heads, against the speaker's pose (position NLL + orientation KL), and by the layout
    head against a relation question's object place (its NLL), in a grouped batch and in whole sequences alike (a
    brute-force loop over the questions); the heads get no gradient from it. --relation-egocentric: a relation
    question's state is read against the object as the speaker sees it instead, computed here in the synthetic
    room's own frame (its place relative to the speaker turned by the speaker's yaw; synth.relations' bearing).
    --relation-readout-layer L with --relation-egocentric ("staged"): the pose and the object's place read at layer L's
    output (the eager run's hidden states, through the final norm), the relation alone at the final state."""
    import math

    from loc3r.model.losses import wrapped_gaussian_target
    from loc3r.model.processor import make_dataset
    from loc3r.synth.grounding import read_scene
    from loc3r.synth.relations import relative_bearing
    from loc3r.synth.shapes import rotate_xy
    from loc3r.synth.situations import RELATION_KINDS
    from loc3r.tiny.relation_data import ObjectPlaces, scene_relations
    from loc3r.train.loop import tiny_tokenizer

    torch.manual_seed(0)
    config = Loc3RConfig.tiny(prior="none")
    data = make_dataset(config, synth_data, "train")
    staged = mode == "staged"
    model = TinyLoc3R(config, tiny_tokenizer(data), TinyBaseConfig(
        relation_layer=-1, relation_readout=True, relation_egocentric=mode != "pose",
        relation_readout_layer=1 if staged else None)).eval()
    places = ObjectPlaces(data, [synth_data])
    scene = data.records[0].scene_id
    room = read_scene(synth_data, scene)
    truth = scene_relations(synth_data / "synth" / f"{scene}.json")  # question id -> pose, object centre, reach
    every = [places[i] for i, r in enumerate(data.records) if r.scene_id == scene]
    samples = [s for s in every if s.has_situation][:6] + [s for s in every if not s.has_situation][:2]
    assert any(s.question_type in RELATION_KINDS for s in samples)
    grouped, flat, flat_batch, out = losses_and_eager_attention(model, samples)

    def nll(head, state, xy):
        mu, log_sigma = head(state[None])
        log_sigma = log_sigma.clamp(min=math.log(config.sigma_floor))
        sigma2 = torch.exp(2 * log_sigma)
        terms = 0.5 * (mu - torch.as_tensor(xy, dtype=torch.float32)) ** 2 / sigma2 + log_sigma
        return terms * sigma2 ** config.nll_beta  # beta-NLL, as the position loss

    def kl(state, yaw):
        target = wrapped_gaussian_target(torch.tensor([yaw]), config.orientation_bins, config.orientation_sigma_rad)
        log_p = torch.log_softmax(model.orientation_head(state[None]), -1)
        return (torch.xlogy(target, target) - target * log_p).sum()

    def reference(states, pose, egocentric):
        position_terms, orientation_terms, object_terms = [], [], []
        with torch.no_grad():
            for b, sample in enumerate(samples):
                if not sample.has_situation:
                    continue
                j = int((flat_batch.labels[b] != -100).nonzero()[0])
                state = states[b, j - 1]
                position, yaw = np.asarray(sample.position_xy, np.float64), float(sample.yaw_rad)
                relation = sample.question_id in truth
                if egocentric and relation:  # the object seen from the speaker, in the room's frame
                    at, facing, centre, _ = truth[sample.question_id]
                    position = rotate_xy(centre - at, -facing)
                    index = next(i for i, o in enumerate(room.objects) if np.allclose(o.center[:2], centre))
                    yaw = float(relative_bearing(room, at[None], facing)[0, index])
                if pose or (egocentric and relation):
                    position_terms.append(nll(model.position_head, state, position))
                    orientation_terms.append(kl(state, yaw))
                if not egocentric and relation:  # the layout head reads the object's place
                    object_terms.append(nll(model.layout_head, state, sample.object_xy))
        return (torch.cat(position_terms).mean() + torch.stack(orientation_terms).mean()
                + (torch.cat(object_terms).mean() if object_terms else 0))

    if staged:
        norm = model.vlm.model.language_model.norm
        expected = {"relation_readout": reference(norm(out.hidden_states[2]), pose=True, egocentric=False),
                    "relation_egocentric": reference(out.last_hidden_state, pose=False, egocentric=True)}
    else:
        expected = {"relation_readout": reference(out.last_hidden_state, pose=True, egocentric=mode == "egocentric")}
    for name, value in expected.items():
        assert torch.allclose(flat[name], value, rtol=1e-4, atol=1e-5)
        assert torch.allclose(grouped[name], value, rtol=1e-4, atol=1e-5)
    model.train()
    model(Collator(model.tokenizer, model.config)(samples)).losses["relation_readout"].backward()
    assert all(p.grad is None for head in (model.position_head, model.orientation_head, model.layout_head)
               for p in head.parameters())
    assert model.vlm.model.language_model.layers[-1 if not staged else 1].mlp.down_proj.weight.grad.abs().sum() > 0


def test_object_places_are_the_objects_in_each_videos_bev_frame(synth_data, tmp_path):
    """--relation-readout's targets (tiny.relation_data.ObjectPlaces): a relation question's object placed in the
    sample's BEV frame from the sample's own pose equals the object's centre taken through the video's world -> BEV
    transform; as seen (the egocentric readout's), the point in that centre's direction from the speaker at the
    distance of the object's footprint, the distance whose whole metres a distance question answers; other questions
    get NaN; a broken description is one line naming its file."""
    from loc3r import geometry
    from loc3r.model.processor import make_dataset
    from loc3r.synth.grounding import read_scene
    from loc3r.synth.relations import object_distance
    from loc3r.synth.situations import RELATION_KINDS
    from loc3r.tiny.relation_data import ObjectPlaces

    ds = make_dataset(Loc3RConfig.tiny(), synth_data, "train")
    places, seen = ObjectPlaces(ds, [synth_data]), ObjectPlaces(ds, [synth_data], as_seen=True)
    assert len(places) == len(ds) and places.video_keys == ds.video_keys
    checked = distances = 0
    for i, r in enumerate(ds.records):
        sample = places[i]
        if sample.question_type not in RELATION_KINDS:
            assert np.isnan(sample.object_xy).all() and np.isnan(seen[i].object_xy).all()
            continue
        desc = json.loads((synth_data / "synth" / f"{r.scene_id}.json").read_text())
        question = next(q for q in desc["questions"] if q["question_id"] == r.question_id)
        scene = read_scene(synth_data, r.scene_id)
        index = next(k for k, o in enumerate(scene.objects) if o.id == question["spec"]["objects"][0])
        centre = scene.objects[index].center
        expected = geometry.world_to_bev_points(ds.scene(r.scene_id).world_to_bev, np.asarray(centre)[None])[0, :2]
        np.testing.assert_allclose(sample.object_xy, expected, atol=1e-3)
        speaker = np.asarray(sample.position_xy, np.float64)
        towards, reach = seen[i].object_xy - speaker, object_distance(scene, question["position"])[0, index]
        np.testing.assert_allclose(np.linalg.norm(towards), reach, atol=1e-3)
        if reach > 0.1:  # the centre's direction
            direction = (expected - speaker) / np.linalg.norm(expected - speaker)
            np.testing.assert_allclose(towards / reach, direction, atol=1e-3)
        if r.question_type == "distance":  # "two meters": the footprint's distance rounded
            words = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5}
            assert round(float(reach)) == words[question["answer"].split()[0]]
            distances += 1
        checked += 1
    assert checked >= 5 and distances >= 1
    batch = Collator(TinyLoc3R(Loc3RConfig.tiny()).tokenizer, Loc3RConfig.tiny())([places[i] for i in range(4)])
    assert batch.object_xy.shape == (4, 2)
    from loc3r.errors import Loc3rError
    from loc3r.tiny.relation_data import scene_relations

    broken = tmp_path / "broken_room.json"  # a description without its objects: one line naming the file
    broken.write_text(json.dumps({"questions": []}))
    with pytest.raises(Loc3rError, match="broken_room.json: not a synthetic room description"):
        scene_relations(broken)
