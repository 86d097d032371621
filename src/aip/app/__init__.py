"""The ``aip`` command and what a person sees of a run.

- :mod:`aip.app.cli`: ``aip run``, ``aip calibrate``, ``aip export``,
  ``aip backends``, ``aip doctor`` (console script ``aip``);
- :mod:`aip.app.config`: ``aip.toml`` -> the same options as the flags;
- :mod:`aip.app.doctor`: versions, devices, ``/dev/shm`` and stale segments;
- :mod:`aip.app.observe`: the live table, ``/metrics`` and ``/healthz``.
- :mod:`aip.app.web`: ``--serve``, the live page and its REST API.

The top layer: it may import every other part of aip, and nothing
imports it.
"""
