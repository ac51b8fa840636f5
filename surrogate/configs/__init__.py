"""Hydra configs of the entry points; importing this package registers the structured schemas
(``infer_schema``: :class:`surrogate.inference.settings.InferConfig`)."""

from surrogate.inference.settings import register as _register_infer

_register_infer()
