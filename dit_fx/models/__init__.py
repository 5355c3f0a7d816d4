"""Trained models that ship with dit_fx (weights under ``dit_fx/assets``).

``fashion``: a class-conditional FLUX-architecture transformer on Fashion-MNIST, its class
conditioner, a small classifier for accuracy / feature-FID and the test-set reference statistics
(issue 18). Importing this package needs only torch; loading needs diffusers and safetensors.
"""

from .fashion import (
    ASSET_DIR,
    CLASS_NAMES,
    NULL_CLASS,
    NUM_CLASSES,
    FashionClassifier,
    FashionConditioner,
    FeatureStats,
    assets_available,
    class_accuracy,
    feature_fid,
    feature_stats,
    load_fashion_classifier,
    load_fashion_conditioner,
    load_fashion_transformer,
    load_reference_stats,
    sample,
)

__all__ = [
    "ASSET_DIR",
    "CLASS_NAMES",
    "NULL_CLASS",
    "NUM_CLASSES",
    "FashionClassifier",
    "FashionConditioner",
    "FeatureStats",
    "assets_available",
    "class_accuracy",
    "feature_fid",
    "feature_stats",
    "load_fashion_classifier",
    "load_fashion_conditioner",
    "load_fashion_transformer",
    "load_reference_stats",
    "sample",
]
