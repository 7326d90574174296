"""Generic supervised training for every classifier in the model registry.

Command line (one process, or data parallel under ``torchrun``)::

    spikevit train --model vit-tiny --dataset cifar10 --data-root /data --epochs 100 --batch-size 256 \
        --lr 1e-3 --warmup-epochs 5 --label-smoothing 0.1 --bf16 --out runs/vit-tiny
    torchrun --nproc_per_node=4 $(which spikevit) train --model ... --out runs/x      # DDP, same flags
    # kill it at any time; rerunning the same command resumes from runs/x/last.safetensors

Library::

    from spikevit.train import TrainConfig, TrainHooks, build_datasets, build_model, fit
    model, run = build_model("vit-tiny", "cifar10")              # registry name + dataset geometry
    train, test = build_datasets("cifar10", "/data", train_subset=5000)
    result = fit(model, train, test, TrainConfig(epochs=10, lr=1e-3), out_dir="runs/x", run=run,
                 hooks=TrainHooks(extra_loss=lambda m, logits, y: 1e-4 * m.some_penalty()))
    result.history[-1]["test"]["acc1"]

Registry constructors receive ``num_classes``, ``in_chans`` and ``img_size`` (only those they accept)
plus any ``--model-arg KEY=VALUE``.  Outputs in ``--out``: ``last.safetensors`` (model + AdamW +
schedule + epoch + per-rank RNG state, written atomically after every epoch), ``log.json`` (one entry
per epoch: lr, train loss/accuracy, test loss/top-1/top-5, hook metrics) and ``model.safetensors``
(final weights; reload with :func:`load_trained_model`).  ``--batch-size`` is the global batch.
"""
from spikevit.train.checkpoint import load_checkpoint, load_trained_model, save_model
from spikevit.train.config import TrainConfig, TrainHooks
from spikevit.train.data import EpochSampler, build_datasets, build_transforms, dataset_geometry, seeded_subset
from spikevit.train.models import build_model, model_kwargs_for, parse_model_args
from spikevit.train.schedule import CosineWarmup, cosine_warmup_lr
from spikevit.train.trainer import TrainResult, default_param_groups, evaluate, fit

__all__ = [
    "TrainConfig", "TrainHooks", "TrainResult", "fit", "evaluate", "default_param_groups", "build_datasets",
    "build_transforms", "dataset_geometry", "seeded_subset", "EpochSampler", "build_model", "model_kwargs_for",
    "parse_model_args", "CosineWarmup", "cosine_warmup_lr", "load_checkpoint", "load_trained_model", "save_model",
]
