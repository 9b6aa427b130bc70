from difgan.data.datamodule import ImageDataModule

__all__ = ["ImageDataModule"]
