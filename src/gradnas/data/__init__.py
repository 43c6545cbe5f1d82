"""Data loading for gradnas: datasets as whole uint8 tensors, batched on-device augmentation,
and the paired weight/architecture batches of gradient-based architecture search."""
from gradnas.data.augment import Augment
from gradnas.data.loader import PairedBatches, SearchSplit, iterate_batches, make_search_split
from gradnas.data.sources import (DATASETS, ImageDataset, load_dataset, register_dataset, registered_dataset,
                                  unregister_dataset)

__all__ = ["ImageDataset", "load_dataset", "DATASETS", "register_dataset", "unregister_dataset", "registered_dataset",
           "Augment", "SearchSplit", "make_search_split", "PairedBatches", "iterate_batches"]
