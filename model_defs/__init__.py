"""Model definitions: architectures, the model registry and the image canonicaliser.

`model_defs.registry.MODELS` is the one place that says, per served model, which class,
input size, labels, data set and preprocessing it uses. Everything else reads it from there.
"""
