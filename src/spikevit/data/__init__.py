"""Datasets (torchvision format or ImageFolder trees, scikit-learn digits) and the feature cache."""
from spikevit.data.datasets import DATASETS, DatasetSpec, dataset_spec, load_dataset
from spikevit.data.features import FeatureSet, extract_features, load_features

__all__ = ["DATASETS", "DatasetSpec", "dataset_spec", "load_dataset", "FeatureSet", "extract_features",
           "load_features"]
