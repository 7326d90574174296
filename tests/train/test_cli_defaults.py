"""``spikevit train`` = ``spikevit.train.fit(TrainConfig(...))``: every optimisation option carries the
TrainConfig default, and the parsed options build exactly that config."""
from dataclasses import fields

from spikevit.cli.main import build_parser
from spikevit.cli.train import config_from_args
from spikevit.train import TrainConfig


def test_train_options_carry_the_trainconfig_defaults():
    args = build_parser().parse_args(["train", "--model", "vit-cifar-micro", "--out", "run"])
    cfg = config_from_args(args)
    default = TrainConfig()
    mapped = {f.name for f in fields(TrainConfig)} - {"betas"}      # betas: no option (AdamW's default)
    for name in mapped:
        assert getattr(cfg, name) == getattr(default, name), name
        assert hasattr(args, name), f"no option for TrainConfig.{name}"
    assert cfg == default


def test_options_reach_the_config():
    args = build_parser().parse_args(["train", "--model", "m", "--out", "run", "--epochs", "7", "--lr", "3e-3",
                                      "--min-lr", "1e-4", "--warmup-epochs", "0.5", "--clip-grad", "2",
                                      "--label-smoothing", "0.1", "--seed", "3", "--bf16"])
    assert config_from_args(args) == TrainConfig(epochs=7, lr=3e-3, min_lr=1e-4, warmup_epochs=0.5, clip_grad=2.0,
                                                 label_smoothing=0.1, seed=3, bf16=True)
