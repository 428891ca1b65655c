"""The indexes one service answers for: served name → index folder and the facade that opens it."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..exceptions import IndexNotFoundError

if TYPE_CHECKING:
    from ..pretrained import RAGPretrainedModel

logger = logging.getLogger(__name__)


class IndexChoiceError(LookupError):
    """A request names no index while several are served, or one that is not served."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class ServedIndexes:
    """Index folders served under their folder names. Indexes in one folder built with one model share one
    :class:`RAGPretrainedModel` (one encoder in memory); every call goes through the facade, so writes use
    its serialised, no-lost-writes path and searches see each committed version."""

    def __init__(self, paths: dict[str, Path], models: dict[str, RAGPretrainedModel]) -> None:
        if not paths:
            raise ValueError("serve at least one index")
        self.paths = paths
        self.models = models

    @classmethod
    def open(
        cls, index_paths: Sequence[str | Path], *, model: str | None = None, device: str | None = None
    ) -> ServedIndexes:
        """Open every index folder (an :class:`IndexNotFoundError` names a missing one before any model loads)."""
        from ..collection import Collection
        from ..pretrained import RAGPretrainedModel

        paths: dict[str, Path] = {}
        infos: dict[str, dict[str, Any]] = {}
        for raw in index_paths:
            path = Path(raw)
            if path.name in paths:
                raise ValueError(
                    f"two served indexes are named {path.name!r} ({paths[path.name]} and {path}): "
                    "serve indexes with different folder names"
                )
            infos[path.name] = Collection(path).info()  # IndexNotFoundError when absent
            paths[path.name] = path
        shared: dict[tuple[Path, str], RAGPretrainedModel] = {}
        models: dict[str, RAGPretrainedModel] = {}
        for name, path in paths.items():
            key = (path.resolve().parent, model or _model_name(infos[name]))
            if key not in shared:
                kwargs: dict[str, Any] = {"device": device, "verbose": 0}
                if model is not None:
                    kwargs["model"] = model
                shared[key] = RAGPretrainedModel.from_index(path, **kwargs)
                logger.info("loaded %s for index %s", key[1], path)
            models[name] = shared[key]
        return cls(paths, models)

    @property
    def names(self) -> list[str]:
        return list(self.paths)

    def resolve(self, name: str | None) -> tuple[str, RAGPretrainedModel]:
        """The served name and its facade; :class:`IndexChoiceError` (400/404) naming the choices."""
        served = ", ".join(self.paths)
        if name is None:
            if len(self.paths) == 1:
                name = next(iter(self.paths))
            else:
                raise IndexChoiceError(f"this service serves several indexes ({served}): pass \"index\"", 400)
        if name not in self.paths:
            raise IndexChoiceError(f"no index {name!r} is served here; served: {served}", 404)
        return name, self.models[name]

    def info(self, name: str) -> dict[str, Any]:
        """What the index holds (``Collection.info()``), without its server-side path."""
        from ..collection import Collection

        try:
            info = Collection(self.paths[name]).info()
        except IndexNotFoundError:
            raise
        except OSError as exc:  # the folder vanished under a running service
            raise IndexNotFoundError(f"index {name!r} cannot be read: {exc}") from exc
        info.pop("path", None)  # where the server keeps it is not the client's business
        return {**info, "name": name}


def _model_name(info: dict[str, Any]) -> str:
    model = info.get("model")
    if isinstance(model, dict):
        return str(model.get("name_or_path", ""))
    return str(model or "")
