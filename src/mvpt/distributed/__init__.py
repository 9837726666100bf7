"""Engines that decide where extraction's shard units run: this process (the default
:class:`mvpt.extract.LocalEngine`) or a Ray cluster (:class:`RayEngine`, needs the optional
``ray`` extra: ``pip install 'mvpt[ray]'``)."""

from __future__ import annotations

from mvpt.distributed.ray_engine import RayEngine, make_engine

__all__ = ["RayEngine", "make_engine"]
