"""The tiny base's pretraining losses (`loc3r pretrain-base`), on top of the paper's: frame-space supervision only.

- `seeing_loss`: each vision token that sees an object reads as the object's colour and category words, where it
  enters the LLM and where it leaves it (through the tied word embeddings);
- `grounding_attention_loss`: in one attention head, every word naming a colour or a category attends to the vision
  tokens that see such an object, and so do <Pos> / <Ori> to the objects their situation names; with `anchor`, in a
  head of a later layer, <Ori> attends to the object the speaker stands by;
- `copy_attention_loss`: in one head, the state predicting an answer word that stands in the prompt attends to
  where it stands, and the head's output there reads as that word (in-context recall supervised densely, as
  research/toy_recall.py found a tiny LLM needs).
The attention losses recompute one head's logits from the inputs its layer received (`attention_inputs` records
them during the forward pass), with the layer's own projections and rotary embedding.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from loc3r.constants import IGNORE_INDEX
from loc3r.model.loc3r import Loc3R
from loc3r.model.losses import gaussian_nll, kl_orientation, wrapped_gaussian_target
from loc3r.model.processor import Batch
from loc3r.tiny.config import TinyBaseConfig


@contextlib.contextmanager
def attention_inputs(model: Loc3R, layer: int | None):
    """Records the (hidden_states, position_embeddings) every call of layer `layer`'s self-attention receives
    (the prefix pass, then the suffix pass of a grouped batch); records nothing for None."""
    calls = []
    if layer is None:
        yield calls
        return
    attention = model.vlm.model.language_model.layers[layer].self_attn

    def record(module, args, kwargs):
        calls.append((kwargs["hidden_states"], kwargs["position_embeddings"]))

    handle = attention.register_forward_pre_hook(record, with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()

def head_attention(model: Loc3R, batch: Batch, calls: list, layer: int, head: int,
                   values: bool = False) -> dict[str, torch.Tensor]:
    """Head `head` of layer `layer` (calls: that layer's recorded inputs), recomputed from the text tokens: its
    own q / k projections and rotary embedding, over every key a token attends to (padding and the causal mask
    respected). Returns logits [B, Lq, Lk] (-inf where not allowed), allowed [B, Lq, Lk], the keys' token ids
    key_ids [B, Lk] and key_labels [B, Lk] (-100 but on the answers, which are labelled where they stand), the
    queries' query_ids, query_mask (text tokens) and query_labels [B, Lq] (the label each query state predicts: the
    labels shifted by one, -100 none), and with `values` the head's values of the
    keys [B, Lk, d] and its columns of o_proj, output [D, d]. For a grouped batch the queries are the
    suffixes' tokens and the keys their video's prefix, then the suffix."""
    return heads_attention(model, batch, calls, layer, (head,), values)[0]


def heads_attention(model: Loc3R, batch: Batch, calls: list, layer: int, heads: tuple[int, ...],
                    values: bool = False) -> list[dict[str, torch.Tensor]]:
    """head_attention of each of `heads` of one layer, the layer's projections computed once."""
    from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb

    attention = model.vlm.model.language_model.layers[layer].self_attn
    d = attention.head_dim
    kv_heads = [h // (attention.config.num_attention_heads // attention.config.num_key_value_heads) for h in heads]

    def q_k(hidden, rope):
        q = attention.q_proj(hidden).unflatten(-1, (-1, d)).transpose(1, 2)  # [B, H, L, d]
        k = attention.k_proj(hidden).unflatten(-1, (-1, d)).transpose(1, 2)  # [B, KV, L, d]
        return apply_rotary_pos_emb(q, k, *rope)

    def head_values(hidden):
        return attention.v_proj(hidden).unflatten(-1, (-1, d))  # [B, L, KV, d]

    ids = batch.input_ids
    if batch.grouped:
        (prefix_hidden, prefix_rope), (text_hidden, text_rope) = calls
        _, k_prefix = q_k(prefix_hidden, prefix_rope)
        q, k_text = q_k(text_hidden, text_rope)
        v = batch.video_index
        keys = torch.cat([k_prefix[v], k_text], 2)  # [Bq, KV, Lp + Ls, d]
        Ls = batch.suffix_ids.shape[1]
        allowed = torch.cat([batch.attention_mask[v, None].bool().expand(-1, Ls, -1),
                             torch.ones(Ls, Ls, dtype=torch.bool, device=ids.device).tril()
                             & batch.suffix_mask[:, None].bool()], 2)  # [Bq, Ls, Lp + Ls]
        key_ids = torch.cat([ids[v], batch.suffix_ids], 1)
        query_ids, query_mask = batch.suffix_ids, batch.suffix_mask.bool()
    else:
        ((hidden, rope),) = calls
        q, keys = q_k(hidden, rope)
        causal = torch.ones(ids.shape[1], ids.shape[1], dtype=torch.bool, device=ids.device).tril()
        allowed = causal & batch.attention_mask[:, None].bool()
        key_ids, query_ids, query_mask = ids, ids, batch.attention_mask.bool() & (ids != model.config.video_token_id)
    query_labels = torch.full_like(query_ids, IGNORE_INDEX)
    key_labels = torch.full_like(key_ids, IGNORE_INDEX)
    if batch.labels is not None:
        query_labels[:, :-1] = batch.labels[:, 1:]
        key_labels[:, key_ids.shape[1] - batch.labels.shape[1]:] = batch.labels  # a grouped batch's: its suffix
    shared = {"allowed": allowed, "key_ids": key_ids, "key_labels": key_labels, "query_ids": query_ids,
              "query_mask": query_mask, "query_labels": query_labels}
    if values:
        all_values = (torch.cat([head_values(prefix_hidden)[v], head_values(text_hidden)], 1)  # [Bq, Lp + Ls, KV, d]
                      if batch.grouped else head_values(hidden))
    out = []
    for head, kv_head in zip(heads, kv_heads):
        logits = (q[:, head] @ keys[:, kv_head].transpose(1, 2)).float() * attention.scaling  # [B, Lq, Lk]
        one = {"logits": logits.masked_fill(~allowed, float("-inf")), **shared}
        if values:
            one["values"] = all_values[:, :, kv_head]
            one["output"] = attention.o_proj.weight[:, head * d:(head + 1) * d]
        out.append(one)
    return out


def attention_mass_loss(logits: torch.Tensor, target: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
    """-log(the attention mass on the target keys) [B, Lq, Lk] bool, averaged over the `queries` [B, Lq] that
    have at least one target key (0 when none has)."""
    queries = queries & target.any(-1)
    if not queries.any():
        return logits.new_zeros(())
    logits = logits[queries]
    mass = torch.logsumexp(logits.masked_fill(~target[queries], float("-inf")), -1)
    return (torch.logsumexp(logits, -1) - mass).mean()

def grounding_attention_loss(model: Loc3R, base: TinyBaseConfig, batch: Batch, calls: list,
                             anchor: bool = False) -> torch.Tensor:
    """The base pretraining's grounding of words in the video: in head `grounding_head` of layer
    `grounding_layer`, every text token whose word is the colour or the category of an object some vision tokens
    see (`batch.token_words`) attends to those tokens, and so do the <Pos> / <Ori> tokens for the words of
    `batch.situation_words` (the objects a situation names). `anchor`: instead, in head `anchor_head` of layer
    `anchor_layer`, only the <Ori> token, to the tokens of the object the speaker stands by (calls: that layer's
    recorded inputs). The attention logits are the layer's own (head_attention); the loss
    is -log(the attention mass on those vision tokens), averaged over the text tokens with at least one such
    vision token."""
    c = model.config
    layer, head = (base.anchor_layer, base.anchor_head) if anchor else (base.grounding_layer, base.grounding_head)
    a = head_attention(model, batch, calls, layer, head)
    # the words each position of the video sequence sees: [Bv, Lp, K], -100 off the vision tokens
    ids = batch.input_ids
    is_video = ids == c.video_token_id
    words = batch.token_words.flatten(1, 2)  # [Bv, T * n, K]
    slots = torch.from_numpy(c.vision_token_slots().reshape(-1)).to(ids.device)
    video_words = words.new_full((ids.shape[0], c.video_placeholder_len, words.shape[-1]), IGNORE_INDEX)
    video_words[:, slots] = words
    seen = words.new_full((*ids.shape, words.shape[-1]), IGNORE_INDEX)
    seen[is_video] = video_words.flatten(0, 1)
    query_ids = a["query_ids"]
    if batch.grouped:
        v = batch.video_index
        key_words = torch.cat([seen[v], seen.new_full((len(v), query_ids.shape[1], seen.shape[-1]),
                                                      IGNORE_INDEX)], 1)
    else:
        key_words = seen
    rows = torch.arange(len(query_ids), device=ids.device)
    if anchor:  # only <Ori>, to the speaker's anchor
        query_ids = torch.full_like(query_ids, IGNORE_INDEX)
        query_ids[rows, batch.ori_index] = batch.situation_words[:, 0]
    elif batch.situation_words is not None:  # <Pos> / <Ori> ground to the objects the situation names
        query_ids = query_ids.clone()
        query_ids[rows, batch.pos_index] = batch.situation_words[:, 0]
        query_ids[rows, batch.ori_index] = batch.situation_words[:, 1]
    matches = (key_words[:, None] == query_ids[:, :, None, None]) & (key_words[:, None] != IGNORE_INDEX)
    return attention_mass_loss(a["logits"], matches.any(-1) & a["allowed"], a["query_mask"])

def copy_attention_loss(model: Loc3R, base: TinyBaseConfig, batch: Batch,
                        calls: list) -> tuple[torch.Tensor, torch.Tensor]:
    """The base pretraining's copy of a name from the prompt (`copy_head` of layer `copy_layer`; calls: that
    layer's recorded inputs), supervised densely, as research/toy_recall.py found a tiny LLM needs to learn
    in-context recall: (where) the state that predicts an answer token which is a word of the prompt (not a
    special token) attends to where that word stands in the prompt (the unlabelled text tokens): -log(the
    attention mass there); (what) the head's output there (its attention over its values, through its columns
    of o_proj), read through the LM head, is that word: cross-entropy. Both averaged over such answer tokens."""
    a = head_attention(model, batch, calls, base.copy_layer, base.copy_head, values=True)
    key_ids, labels = a["key_ids"], a["query_labels"]
    special = torch.tensor(sorted(model.tokenizer.all_special_ids), device=key_ids.device)
    # the keys that are prompt words: not a special token and not a label (answers are labelled where they stand)
    prompt = ~torch.isin(key_ids, special) & (a["key_labels"] == IGNORE_INDEX)  # [B, Lk]
    copied = (labels != IGNORE_INDEX) & ~torch.isin(labels, special)  # [B, Lq]
    target = (key_ids[:, None] == labels[:, :, None]) & prompt[:, None] & a["allowed"]
    where = attention_mass_loss(a["logits"], target, copied)
    copied = copied & target.any(-1)
    if not copied.any():
        return where, where.new_zeros(())
    rows, cols = copied.nonzero(as_tuple=True)
    weights = a["logits"][rows, cols].softmax(-1)  # [N, Lk]
    head_out = torch.einsum("nk,nkd->nd", weights, a["values"][rows].float()) @ a["output"].float().T  # [N, D]
    what = F.cross_entropy(model.vlm.lm_head(head_out.to(a["output"].dtype)).float(), labels[rows, cols])
    return where, what

def relation_attention_loss(model: Loc3R, base: TinyBaseConfig, batch: Batch, calls: list,
                            name_ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """The Loc3R stage's relation heads (calls: layer `relation_layer`'s recorded inputs): every state that predicts
    an answer token of a situated question attends, in the heads `relation_heads`, to the names of the question's
    objects (the question's words after <Ori> that are in name_ids, the colour and category words), to <Pos> and to
    <Ori>: -log(the attention mass there), averaged over such states; {"relation_names", "relation_pos",
    "relation_ori"}. An answer that depends on the speaker's pose and an object's place together (left or right of
    me) carries no gradient towards either alone; the three heads bring all of them to the answer, where the MLP
    can learn the relation."""
    out = {}
    names = ("relation_names", "relation_pos", "relation_ori")
    for a, name in zip(heads_attention(model, batch, calls, base.relation_layer, tuple(base.relation_heads)), names):
        key_ids, allowed = a["key_ids"], a["allowed"]
        Lk = key_ids.shape[1]
        # key positions of the question's text: after <Ori>, in the suffix of a grouped batch
        offset = Lk - batch.suffix_ids.shape[1] if batch.grouped else 0
        where = torch.arange(Lk, device=key_ids.device)[None] - offset  # [1, Lk] index into the suffix / sequence
        ori = batch.ori_index[:, None]
        if name == "relation_pos":
            target = where == batch.pos_index[:, None]
        elif name == "relation_ori":
            target = where == ori
        else:  # a name of the prompt, not of the answer
            target = (where > ori) & torch.isin(key_ids, name_ids) & (a["key_labels"] == IGNORE_INDEX)
        queries = (a["query_labels"] != IGNORE_INDEX) & batch.has_situation[:, None]
        out[name] = attention_mass_loss(a["logits"], target[:, None] & allowed, queries)
    return out


def relation_readout_loss(model: Loc3R, batch: Batch, text_hidden: torch.Tensor, pose: bool = True,
                          egocentric: bool = False) -> torch.Tensor:
    """The Loc3R stage's pose at the answer: the final state that predicts a situated question's first answer token,
    read by the model's own position and orientation heads (their weights detached: the heads stay what <Pos> /
    <Ori> train them to be), gives the speaker's pose (position NLL + orientation KL, the situation losses' terms),
    and, where the batch has `object_xy` (a relation question's object, tiny.relation_data), read by the layout
    head, the object's place (its NLL). A relation of the speaker and an object needs both; neither alone says
    anything about the answer, so neither gets a gradient through the answer until the other is there (text_hidden
    [B, L, D]: the suffixes' states of a grouped batch, else the sequences'; the final states, or a layer's output
    through the LLM's final norm).

    egocentric: the state of a question with `object_xy` gives instead the relation itself, the object as the speaker
    sees it: its place in the speaker's frame (metres; +x ahead, +y on the left) through the position head and its
    bearing (0 ahead, +pi/2 on the left) through the orientation head. Left or right, which way to go and how far
    all follow from it, and a regression target is dense: it has a gradient towards each ingredient from the start.
    pose=False: only those questions' relation is read (the ingredients read at an earlier layer's state)."""
    c = model.config
    labelled = batch.labels != IGNORE_INDEX  # [B, L]
    first = labelled.float().argmax(-1)  # the first answer token; its state is the one before it
    rows = torch.arange(len(first), device=first.device)
    situated = batch.has_situation & labelled.any(-1) & (first > 0)
    state = text_hidden[rows, (first - 1).clamp(min=0)]  # [B, D]
    seen = situated & (torch.isfinite(batch.object_xy).all(-1) if batch.object_xy is not None
                       else torch.zeros_like(situated))  # a relation question whose object's place is known

    def detached(head):
        return torch.func.functional_call(head, {k: v.detach() for k, v in head.named_parameters()}, (state,))

    position_xy, yaw, read = batch.position_xy, batch.yaw_rad, situated if pose else torch.zeros_like(situated)
    if egocentric and batch.object_xy is not None:  # the seen rows read the object from the speaker instead
        place = speaker_frame(batch.object_xy.nan_to_num(), batch.position_xy, batch.yaw_rad)
        position_xy = torch.where(seen[:, None], place, position_xy)
        yaw = torch.where(seen, torch.atan2(place[:, 1], place[:, 0]), yaw)
        read = read | seen
    target = wrapped_gaussian_target(yaw, c.orientation_bins, c.orientation_sigma_rad)
    loss = (gaussian_nll(*detached(model.position_head), position_xy, read, c.sigma_floor, beta=c.nll_beta)
            + kl_orientation(detached(model.orientation_head), target, read))
    if seen.any() and not egocentric:  # the place of a relation question's object, by the layout head
        loss = loss + gaussian_nll(*detached(model.layout_head), batch.object_xy, seen, c.sigma_floor,
                                   beta=c.nll_beta)
    return loss


@contextlib.contextmanager
def layer_outputs(model: Loc3R, layer: int | None):
    """Records the hidden states [B, L, D] every call of LLM layer `layer` returns (the prefix pass, then the suffix
    pass of a grouped batch); records nothing for None."""
    states = []
    if layer is None:
        yield states
        return

    def record(module, args, output):
        states.append(output[0] if isinstance(output, tuple) else output)

    handle = model.vlm.model.language_model.layers[layer].register_forward_hook(record)
    try:
        yield states
    finally:
        handle.remove()


def speaker_frame(xy: torch.Tensor, position_xy: torch.Tensor, yaw_rad: torch.Tensor) -> torch.Tensor:
    """Points [B, 2] of a frame in the frame of speakers standing at position_xy [B, 2] facing yaw_rad [B] (CCW from
    +x): +x ahead of the speaker, +y on its left."""
    d = xy - position_xy
    cos, sin = torch.cos(yaw_rad), torch.sin(yaw_rad)
    return torch.stack([cos * d[:, 0] + sin * d[:, 1], -sin * d[:, 0] + cos * d[:, 1]], -1)


def seeing_loss(model: Loc3R, vision: torch.Tensor, states: torch.Tensor, words: torch.Tensor,
                denominator: torch.Tensor | None) -> torch.Tensor:
    """The base pretraining's frame-space supervision: each labelled vision token [B, T, n] is read through
    the (tied) word embeddings as its words [B, T, n, K] (K targets each, -100 none), both where it enters the
    LLM (vision [B, T, n, D]: the projector's output, aligned with the words' embeddings, as LLaVA's first
    stage aligns the projector) and where it leaves it (states [B, T, n, D], through the LM head). Cross-entropy
    summed over both and over the targets, divided by `denominator` (default: the number of targets)."""
    table = model.vlm.get_input_embeddings().weight  # [V, D]
    total = vision.new_zeros((), dtype=torch.float32)
    for k in range(words.shape[-1]):
        target = words[..., k]
        keep = target != IGNORE_INDEX
        if keep.any():
            total = total + F.cross_entropy((vision[keep] @ table.T).float(), target[keep], reduction="sum")
            total = total + F.cross_entropy(model.vlm.lm_head(states[keep]).float(), target[keep], reduction="sum")
    count = (words != IGNORE_INDEX).sum().clamp(min=1) if denominator is None else denominator
    return total / count

