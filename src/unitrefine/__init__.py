"""unitrefine: tracked AutoML for spike-sorting curation models.

The names users import come from here (``from unitrefine import train_model, load_model_folder, TRUSTED_TYPES``);
the packages under it are laid out by concern (docs/architecture.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__all__ = ["TRUSTED_TYPES", "UnitRefineError", "load_model_folder", "train_model"]
__version__ = "0.1.0"

from unitrefine.errors import UnitRefineError

if TYPE_CHECKING:
    from unitrefine.api import train_model
    from unitrefine.export.folder import load_model_folder
    from unitrefine.search.estimators import TRUSTED_TYPES

# Heavy libraries load only when one of these is used.
_LAZY = {"train_model": "unitrefine.api", "load_model_folder": "unitrefine.export.folder",
         "TRUSTED_TYPES": "unitrefine.search.estimators"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)
