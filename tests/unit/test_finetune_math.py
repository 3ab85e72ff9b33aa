"""Fine-tuning's math: macro-F1 against its definition (and scikit-learn), LoRA's merged weights
against the adapter's outputs, the small BERT against transformers' BertModel on the same weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from aicloud.training.class_metrics import classification_metrics, macro_f1
from aicloud.training.text_encoder import BertEncoder, LoRALinear, TextClassifier, add_lora, merge_lora

from model_files import TINY_BERT


def test_macro_f1_is_the_mean_of_the_per_class_f1() -> None:
    y = np.array([0, 0, 0, 1, 1, 2])
    pred = np.array([0, 0, 1, 1, 2, 2])
    # class 0: tp 2 fp 0 fn 1 → 0.8; class 1: tp 1 fp 1 fn 1 → 0.5; class 2: tp 1 fp 1 fn 0 → 2/3
    assert macro_f1(pred, y, 3) == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    y, pred = rng.integers(0, 5, 200), rng.integers(0, 5, 200)
    assert macro_f1(pred, y, 5) == pytest.approx(f1_score(y, pred, average="macro"))


def test_macro_f1_leaves_out_classes_never_seen_nor_predicted() -> None:
    assert macro_f1(np.array([0, 1]), np.array([0, 1]), 4) == 1.0
    assert np.isnan(macro_f1(np.array([]), np.array([]), 3))


def test_classification_metrics_of_logits() -> None:
    logits = np.array([[5.0, 0.0], [0.0, 5.0], [5.0, 0.0]])
    m = classification_metrics(logits, np.array([0, 1, 1]))
    assert m["eval_accuracy"] == pytest.approx(2 / 3)
    assert m["eval_macro_f1"] == pytest.approx((2 / 3 + 2 / 3) / 2)
    assert m["eval_loss"] > 0


def test_lora_starts_equal_to_the_base_and_merges_to_the_same_outputs() -> None:
    torch.manual_seed(0)
    base = torch.nn.Linear(16, 8)
    lora = LoRALinear(base, rank=4, alpha=8.0)
    x = torch.randn(5, 16)
    torch.testing.assert_close(lora(x), base(x))  # B starts at zero
    with torch.no_grad():
        lora.lora_B.normal_()
    merged = lora.merged()
    assert not torch.allclose(lora(x), base(x))
    torch.testing.assert_close(merged(x), lora(x), atol=1e-5, rtol=1e-5)
    expected = base.weight + (lora.lora_B @ lora.lora_A) * (8.0 / 4)
    torch.testing.assert_close(merged.weight, expected)
    assert not any(p.requires_grad for p in lora.base.parameters())


def test_a_merged_lora_classifier_computes_what_the_adapted_one_does() -> None:
    torch.manual_seed(1)
    model = TextClassifier(BertEncoder(TINY_BERT), 3).eval()
    add_lora(model.encoder, rank=4, alpha=8.0)
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trained and all(".lora_" in n or n.startswith("head.") for n in trained)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_B" in name:
                p.normal_(std=0.5)
    ids = torch.randint(4, 100, (3, 9))
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    with torch.no_grad():
        adapted = model(ids, mask)
        merge_lora(model.encoder)
        merged = model(ids, mask)
    assert not any(".lora_" in n for n, _ in model.named_parameters())
    torch.testing.assert_close(merged, adapted, atol=1e-5, rtol=1e-5)


def test_the_small_bert_computes_what_transformers_bert_does() -> None:
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(**TINY_BERT)
    torch.manual_seed(2)
    hf = transformers.BertModel(config, add_pooling_layer=False).eval()
    ours = BertEncoder(TINY_BERT).eval()
    state = {k: v for k, v in hf.state_dict().items() if k != "embeddings.position_ids"}
    ours.load_state_dict(state)
    ids = torch.randint(4, 100, (2, 7))
    mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])
    with torch.no_grad():
        want = hf(input_ids=ids, attention_mask=mask).last_hidden_state
        got = ours(ids, mask)
    torch.testing.assert_close(got[mask.bool()], want[mask.bool()], atol=1e-5, rtol=1e-4)
