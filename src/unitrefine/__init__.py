"""unitrefine: tracked AutoML for spike-sorting curation models."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["UnitRefineError", "train_model"]
__version__ = "0.1.0"

from unitrefine.errors import UnitRefineError

if TYPE_CHECKING:
    from unitrefine.api import train_model


def __getattr__(name: str) -> Any:
    # Heavy libraries load only when the training API is used.
    if name == "train_model":
        from unitrefine.api import train_model

        return train_model
    raise AttributeError(name)
