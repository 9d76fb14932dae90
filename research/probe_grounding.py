"""What a checkpoint reads from the video (the tiny base of `loc3r pretrain-base`, or any tiny run): accuracy of the
grounding questions per family on rooms of a split, and how often a vision token that sees an object is read as
that object's colour / category word at the LLM's input and output (the base's frame-space supervision), and how
much attention the grounding head puts on the vision tokens of the object a word names (and the anchor head,
<Ori> on the tokens of the object the speaker stands by; the copy head of a base pretrained with --copy-questions,
a predicted answer word on that word in the prompt), and how much of a colour or category word of the prompt each
layer's input still holds (the words a copy reads): the word at the argmax of the (normed) state against the words'
embeddings ("logit lens") and a nearest-class-mean probe fitted on half the questions, scored on the other half
(chance: one over the words).

    python research/probe_grounding.py --checkpoint BASE/checkpoints/step_0003000 --data demo_out/test_data \
        --split test

The checkpoint (a run or checkpoint directory) is loaded by loc3r.train.checkpoint.load_model: a TinyLoc3R, whose
`base` (loc3r.tiny.TinyBaseConfig) names the supervised heads; a tiny model without a base's settings is read with
TinyBaseConfig's defaults.

Prints a table; families: "What is the red object?" (colour -> category), "What color is the bed?" (category ->
colour), existence, the list of the room's objects (exact), how many objects; with --copy-questions also the
choice between two names ("Which is in the room, the red bed or the red sofa?") and what the situation text says
("Which object am I facing?", "What color is the object I am next to?"); chance is one over the answers.
"""

from __future__ import annotations

import argparse
import collections
import math
from pathlib import Path

import torch

from loc3r.model.loc3r import position_ids_from_mask
from loc3r.model.processor import Collator, make_dataset
from loc3r.synth.catalog import CATEGORIES, COLOR_RGB
from loc3r.tiny import TinyBaseConfig
from loc3r.tiny import losses as tiny_losses
from loc3r.tiny.grounding_data import GroundingDataset, grounding_records
from loc3r.train.checkpoint import load_model

FAMILIES = (("Which object am I", "situation -> category"), ("What color is the object I am", "situation -> colour"),
            ("Which is in the room", "choice of two names"),
            ("What is the", "colour -> category"), ("What color is the", "category -> colour"),
            ("Is there", "existence"), ("What objects", "list of objects"), ("How many", "count"))


def family(question: str) -> str:
    return next(name for prefix, name in FAMILIES if question.startswith(prefix))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True, help="synthetic rooms (loc3r synth)")
    p.add_argument("--split", default="test")
    p.add_argument("--max-questions", type=int, default=800)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--copy-questions", action="store_true", help="with the choices and the situation readings")
    args = p.parse_args()
    model = load_model(args.checkpoint).eval()
    config = model.config
    base = getattr(model, "base", None) or TinyBaseConfig()  # the heads the base's pretraining supervises
    records, scenes = grounding_records(args.data, args.split, 0, args.copy_questions)
    records = [records[i] for i in torch.randperm(len(records), generator=torch.Generator().manual_seed(0))
               [:args.max_questions].sort().values.tolist()]
    data = GroundingDataset(make_dataset(config, args.data, args.split, None, records), scenes)
    data.bind(model.tokenizer)
    collate = Collator(model.tokenizer, config, for_generation=True)
    collate_labelled = Collator(model.tokenizer, config)
    right = collections.defaultdict(list)
    seen = {"input": [0, 0], "output": [0, 0]}
    grounding = []  # per batch: mean -log(attention mass of the grounding head on the named object's tokens)
    anchor = []  # the same for the anchor head (<Ori> on the speaker's anchor)
    copy = []  # the copy head: -log(attention mass of a predicted answer word on that word in the prompt)
    table = model.vlm.get_input_embeddings().weight
    vocab = model.tokenizer.get_vocab()
    word_ids = {"colour": torch.tensor(sorted(vocab[w] for w in COLOR_RGB if w in vocab)),
                "category": torch.tensor(sorted(vocab[w] for w in CATEGORIES if w in vocab))}  # one-word categories
    identity = collections.defaultdict(list)  # (kind, layer) -> [(states [N, D], word ids [N])]
    with torch.no_grad():
        for start in range(0, len(data), args.batch_size):
            samples = [data[i] for i in range(start, min(len(data), start + args.batch_size))]
            batch = collate(samples)
            for s, pred in zip(samples, model.predict(batch, max_new_tokens=16)):
                right[family(s.question)].append(pred.answer == s.answers[0])
            # vision tokens read as their words: the argmax over the vocabulary is the colour / first category word
            vision = model.vision_tokens(batch.pixel_values_videos)  # [B, T, gh, gw, D]
            with (tiny_losses.attention_inputs(model, base.grounding_layer) as calls,
                  tiny_losses.attention_inputs(model, base.anchor_layer) as anchor_calls):
                out = model.vlm.model.language_model(
                    inputs_embeds=model.embed_inputs(batch, vision), attention_mask=batch.attention_mask,
                    position_ids=position_ids_from_mask(batch.attention_mask), output_hidden_states=True)
            hidden = out.last_hidden_state
            for kind, ids in word_ids.items():  # the prompt's colour / category words at each layer's input
                where = torch.isin(batch.input_ids, ids)
                for layer, h in enumerate(out.hidden_states[:-1]):
                    states = model.vlm.model.language_model.layers[layer].input_layernorm(h[where])
                    identity[kind, layer].append((states, batch.input_ids[where]))
            vision = vision.flatten(2, 3)  # [B, T, n, D]
            grounding.append(float(tiny_losses.grounding_attention_loss(model, base, batch, calls)))
            if base.copy_layer is not None and "copy" in (losses := model(collate_labelled(samples)).losses):
                copy.append(float(losses["copy"]))
            if base.anchor_layer is not None:
                anchor.append(float(tiny_losses.grounding_attention_loss(model, base, batch, anchor_calls,
                                                                         anchor=True)))
            states = model.vision_states(hidden, batch.input_ids)
            words = batch.token_words
            keep = words[..., 0] != -100
            for name, logits in (("input", vision[keep] @ table.T), ("output", model.vlm.lm_head(states[keep]))):
                top = logits.argmax(-1)
                seen[name][0] += int((top == words[keep][:, 0]).sum() + (top == words[keep][:, 1]).sum())
                seen[name][1] += int(keep.sum())
    print(f"{args.checkpoint} on {args.data} ({args.split}): {len(data)} questions")
    print(f"{'family':<22}{'questions':>10}{'accuracy':>10}")
    for _, name in FAMILIES:
        if right[name]:
            print(f"{name:<22}{len(right[name]):>10}{100 * sum(right[name]) / len(right[name]):>10.1f}")
    for name, (hit, n) in seen.items():
        print(f"vision tokens read as their colour or category at the LLM's {name}: {100 * hit / max(n, 1):.1f}% "
              f"of {n}")
    print(f"{'prompt words':<14}{'layer input':>12}{'logit lens %':>14}{'class-mean probe %':>20}")
    for (kind, layer), parts in sorted(identity.items()):
        states, words = torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])
        ids = word_ids[kind]
        lens = ids[(states @ table[ids].T).argmax(-1)] == words
        half = len(words) // 2
        classes = words[:half].unique()
        means = torch.stack([states[:half][words[:half] == c].mean(0) for c in classes])
        test = torch.isin(words[half:], classes)  # scored on the words the first half has
        probe = classes[torch.cdist(states[half:][test], means).argmin(-1)] == words[half:][test]
        print(f"{kind:<14}{layer:>12}{100 * lens.float().mean():>14.1f}{100 * probe.float().mean():>20.1f}")
    for name, layer, head, losses, what in (
            ("grounding", base.grounding_layer, base.grounding_head, grounding, "the named object's vision tokens"),
            ("anchor", base.anchor_layer, base.anchor_head, anchor, "<Ori> on the speaker's anchor's vision tokens"),
            ("copy", base.copy_layer, base.copy_head, copy, "an answer word on where it stands in the prompt")):
        if losses:
            nll = sum(losses) / len(losses)
            print(f"{name} head (layer {layer}, head {head}): -log(attention mass of {what}) {nll:.2f}, "
                  f"i.e. a geometric-mean mass of {100 * math.exp(-nll):.1f}%")


if __name__ == "__main__":
    main()
