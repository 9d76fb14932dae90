"""--autocast: the LLM's matrix products in bf16 on a CPU (Loc3R.llm_autocast, parallel.cpu_autocast). The losses and
gradients stay those of fp32 to bf16's precision, the states the heads read stay fp32, and attention runs in fp32."""

import pytest
import torch
from transformers.integrations.sdpa_attention import sdpa_attention_forward

from loc3r import parallel
from loc3r.errors import Loc3rError
from loc3r.model.config import Loc3RConfig
from loc3r.model.loc3r import Loc3R
from loc3r.model.processor import Collator
from loc3r.model.tokenizer import build_tiny_tokenizer
from tests.test_collate import WORDS
from tests.test_shared_prefix import grouped_samples


@pytest.fixture(scope="module")
def model():
    parallel.grouped_query_attention(torch.device("cpu"))  # what a training run's compute_init installs
    torch.manual_seed(0)
    return Loc3R(Loc3RConfig.tiny(num_frames=2), build_tiny_tokenizer(WORDS)).eval()


def losses_and_grads(model, batch, dtype):
    model.llm_autocast = dtype
    try:
        model.zero_grad()
        out = model(batch)
        out.loss.backward()
    finally:
        model.llm_autocast = None
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_bf16_products_give_the_fp32_losses_and_gradients_to_bf16_precision(model):
    batch = Collator(model.tokenizer, model.config).grouped(grouped_samples(model.config, videos=2, per_video=3))
    (a, ga), (b, gb) = losses_and_grads(model, batch, None), losses_and_grads(model, batch, torch.bfloat16)
    for out in (a, b):  # what the heads and losses read is fp32 either way
        assert out.position.mu.dtype == out.orientation_logits.dtype == out.layout.mu.dtype == torch.float32
    for name in a.losses:
        torch.testing.assert_close(b.losses[name], a.losses[name], rtol=2e-2, atol=2e-3, msg=name)
    assert ga.keys() == gb.keys() and len(ga) > 20
    cosines = {n: float(torch.nn.functional.cosine_similarity(ga[n].flatten(), gb[n].flatten(), 0)) for n in ga
               if ga[n].norm() > 1e-6}
    assert min(cosines.values()) > 0.99, sorted(cosines.items(), key=lambda kv: kv[1])[:3]
    # and the products did run in bf16: the losses are not bitwise the fp32 ones
    assert any(not torch.equal(a.losses[n], b.losses[n]) for n in a.losses)


def test_attention_under_cpu_autocast_runs_in_fp32():
    parallel.grouped_query_attention(torch.device("cpu"))
    from transformers import AttentionInterface

    attention = AttentionInterface()["sdpa"]
    module = torch.nn.Module()
    module.is_causal, module.training, module.num_key_value_groups = True, False, 2
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, h, 5, 8, generator=g).bfloat16() for h in (4, 2, 2))
    mask = torch.ones(2, 1, 5, 5, dtype=torch.bool).tril()
    with torch.autocast("cpu", torch.bfloat16):
        out, _ = attention(module, q, k, v, mask)
    expected, _ = sdpa_attention_forward(module, q.float(), k.float(), v.float(), mask)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, expected.bfloat16(), rtol=0, atol=0)
    # without autocast it is transformers' own
    plain, _ = attention(module, q, k, v, mask)
    torch.testing.assert_close(plain, sdpa_attention_forward(module, q, k, v, mask)[0], rtol=0, atol=0)


@pytest.mark.parametrize("setting, amx, expected", [("off", True, None), ("auto", False, None),
                                                    ("auto", True, torch.bfloat16), ("bf16", False, torch.bfloat16)])
def test_the_autocast_setting(model, monkeypatch, setting, amx, expected):
    monkeypatch.setattr(parallel, "cpu_has_amx", lambda: amx)
    assert parallel.cpu_autocast(setting, torch.device("cpu"), model) is expected
    assert parallel.cpu_autocast("auto", torch.device("cuda"), model) is None  # a GPU run takes the preset's dtype
    with pytest.raises(Loc3rError, match="for a CPU"):
        parallel.cpu_autocast("bf16", torch.device("cuda"), model)


def test_auto_leaves_a_bf16_model_as_it_is(monkeypatch):
    monkeypatch.setattr(parallel, "cpu_has_amx", lambda: True)
    layer = torch.nn.Linear(2, 2).bfloat16()
    assert parallel.cpu_autocast("auto", torch.device("cpu"), layer) is None
