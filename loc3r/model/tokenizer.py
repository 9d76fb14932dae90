"""Tokenizers: the special tokens of Loc3R-VLM, the tiny preset's word-level tokenizer, and loading a base model's.

The tiny tokenizer is built offline with the `tokenizers` library: a word-level vocabulary (lower-cased, split
on whitespace and punctuation, digits one by one) plus the special tokens, wrapped in transformers'
`PreTrainedTokenizerFast` and saved with each checkpoint. It carries a minimal ChatML chat template, so the
collate formats every model's prompt the same way: through `tokenizer.apply_chat_template`.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from loc3r.constants import END_OF_TURN, ORI_TOKEN, POS_TOKEN, VIDEO_TOKEN
from loc3r.errors import Loc3rError

# The tiny preset's config takes the ids of <image> and <video> from this list's order.
TINY_SPECIAL_TOKENS = ["<pad>", "<unk>", "<|im_start|>", END_OF_TURN, "<image>", VIDEO_TOKEN, POS_TOKEN, ORI_TOKEN]
# Words every prompt uses (chat roles, the pseudo-situation); the data's vocabulary is added to them.
TINY_BASE_WORDS = ["system", "user", "assistant", "i", "am", "standing", "in", "the", "room", "yes", "no",
                   ".", ",", "?"]
# LLaVA-Video's time instruction (loc3r.model.processor.time_instruction), so that the tiny preset can take it too
TINY_TIME_WORDS = ("the video lasts for seconds , and frames are uniformly sampled from it . these located at s "
                   "please answer following questions related to this").split()

# ChatML without a system turn: the tiny model has no system prompt to remember.
TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Qwen2's ChatML template (LLaVA-Video's `qwen_1_5` conversation): used when a base tokenizer ships none.
CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_tiny_tokenizer(words: list[str]) -> PreTrainedTokenizerFast:
    """Word-level tokenizer over `words` (split the same way as the text they will tokenize) + special tokens."""
    normalizer = normalizers.Lowercase()
    pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Whitespace(),
                                             pre_tokenizers.Digits(individual_digits=True)])
    pieces = [piece for w in TINY_BASE_WORDS + list(words) + TINY_TIME_WORDS + [str(d) for d in range(10)]
              for piece, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(w))]
    vocab = {tok: i for i, tok in enumerate(TINY_SPECIAL_TOKENS)}
    for piece in pieces:
        vocab.setdefault(piece, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in TINY_SPECIAL_TOKENS])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<pad>", eos_token=END_OF_TURN,
                                   chat_template=TINY_CHAT_TEMPLATE)


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """A checkpoint's or base model's tokenizer; ChatML (Qwen2's) when it ships no chat template."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as e:
        raise Loc3rError(f"{path}: cannot load the tokenizer ({type(e).__name__}: {e})") from e
    if tokenizer.chat_template is None:
        tokenizer.chat_template = CHATML_TEMPLATE
    if tokenizer.convert_tokens_to_ids(VIDEO_TOKEN) in (None, tokenizer.unk_token_id):
        raise Loc3rError(f"{path}: the tokenizer has no {VIDEO_TOKEN} token (not a LLaVA-Video / OneVision tokenizer)")
    return tokenizer


def add_situation_tokens(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Add <Pos> and <Ori> as special tokens where missing; return their ids."""
    tokenizer.add_tokens([AddedToken(t, normalized=False, special=True) for t in (POS_TOKEN, ORI_TOKEN)],
                         special_tokens=True)
    return tokenizer.convert_tokens_to_ids([POS_TOKEN, ORI_TOKEN])
