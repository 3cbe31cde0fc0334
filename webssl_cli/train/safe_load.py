"""Loading checkpoints without running code from them.

``torch.load(weights_only=False)`` and ``pickle.load`` execute whatever a file names (a
``__reduce__`` that runs a command): a checkpoint planted in a run directory would run code in
the next `webssl train`. Everything read back here goes through torch's weights-only unpickler
(tensors, numbers, strings, containers) or, for the DCP metadata file, an unpickler that
builds only the checkpoint metadata classes listed below.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.planner import ReadItem

# What a DCP ``.metadata`` file needs (measured on torch 2.13: save a model and an optimizer
# state and list the globals its pickle names). Anything else is refused.
_DCP_GLOBALS = {
    ("pathlib", "PosixPath"),
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    *(
        ("torch.distributed.checkpoint.metadata", name)
        for name in (
            "BytesStorageMetadata",
            "ChunkStorageMetadata",
            "Metadata",
            "MetadataIndex",
            "StorageMeta",
            "TensorProperties",
            "TensorStorageMetadata",
            "_MEM_FORMAT_ENCODING",
        )
    ),
}


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if (module, name) in _DCP_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refused to load {module}.{name} from checkpoint metadata")


class SafeReader(FileSystemReader):
    """A DCP reader whose metadata file may only hold checkpoint metadata."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        # The global metadata file, or a rank's own one (torch's names for both).
        rank = kwargs.get("rank")
        name = ".metadata" if rank is None else f"__{rank}.metadata"
        with open(Path(str(self.path)) / name, "rb") as f:
            metadata = _MetadataUnpickler(f).load()
        if not isinstance(metadata, Metadata):
            raise pickle.UnpicklingError("checkpoint metadata is not DCP metadata")
        storage_meta = getattr(metadata, "storage_meta", None) or StorageMeta()
        storage_meta.load_id = self.load_id
        metadata.storage_meta = storage_meta
        return metadata


class SafeLoadPlanner(DefaultLoadPlanner):
    """Non-tensor entries (optimizer hyper-parameters, counters) with the weights-only unpickler."""

    def load_bytes(self, read_item: ReadItem, value: io.BytesIO) -> None:
        obj = torch.load(value, weights_only=True)
        fqn = read_item.dest_index.fqn
        if self.flatten_state_dict:
            from torch.distributed.checkpoint._traverse import set_element

            set_element(self.original_state_dict, self.mappings[fqn], obj)
        else:
            self.state_dict[fqn] = obj


def load_weights(path: str | Path, **kw: Any) -> Any:
    """``torch.load`` that builds tensors, numbers, strings and containers, nothing else."""
    return torch.load(path, weights_only=True, **kw)
