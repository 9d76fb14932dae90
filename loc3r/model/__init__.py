"""The Loc3R-VLM model: config.py (presets), loc3r.py (the wrapper around transformers' LlavaOnevision),
heads.py (layout / position / orientation heads), losses.py, tokenizer.py (special tokens, the tiny tokenizer).

    from loc3r.model.config import Loc3RConfig
    from loc3r.model.loc3r import Loc3R
"""
