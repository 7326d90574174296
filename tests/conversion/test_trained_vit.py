"""The committed trained CIFAR-10 ViT (results/conversion/vit-cifar-tiny): loads as the model it was trained as,
and its SIT conversion at K = 12 keeps the ANN's predictions on real test images."""
from pathlib import Path

import pytest
import torch

from spikevit.conversion import attention_modules, capture_attention_logits, convert
from spikevit.data import load_dataset
from spikevit.train import build_transforms, load_trained_model

MODEL = Path(__file__).resolve().parents[2] / "results" / "conversion" / "vit-cifar-tiny" / "tanh" / "model.safetensors"


@pytest.mark.skipif(not MODEL.exists(), reason="committed model file not present")
def test_committed_vit_converts_without_changing_predictions(data_slices):
    model, run = load_trained_model(MODEL)
    assert run["model"] == "vit-cifar-tiny" and model.squeeze == "tanh"     # the restriction it was trained with
    test = load_dataset("cifar10", data_slices, "test", build_transforms("cifar10", False, False, None), False)
    x = torch.stack([test[i][0] for i in range(0, len(test), 4)])            # 50 real test images, all classes
    y = torch.tensor([test[i][1] for i in range(0, len(test), 4)])
    with torch.no_grad():
        ann = model.eval()(x)
        snn_model = convert(model, steps=12)
        snn = snn_model(x)
        logits = capture_attention_logits(convert(model, blocks=0), [(x, None)], "cpu")
    assert all(m.converted for m in attention_modules(snn_model)) and len(attention_modules(snn_model)) == 4
    assert float((ann.argmax(1) == y).float().mean()) > 0.5                 # a trained model, not random weights
    # softmax inputs are the tanh outputs: inside the SI-exp neuron's fitted range
    assert float(logits.abs().max()) <= 1.0
    # conversion error is small relative to the logits and leaves (almost) every prediction unchanged
    assert float((snn - ann).norm() / ann.norm()) < 0.01
    assert int((snn.argmax(1) != ann.argmax(1)).sum()) <= 1
