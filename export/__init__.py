"""The offline pipeline: data sets, training, TorchScript export and archiving."""
