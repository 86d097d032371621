"""Where frames come from and where results go.

- :mod:`aip.io.sources`: video files, cameras and RTSP/HTTP streams, image
  folders, synthetic frames; reconnects;
- :mod:`aip.io.sinks`: JSON Lines, annotated video;
- :mod:`aip.io.samples`: the sample video made from ultralytics' photos;
- :mod:`aip.io.credentials`: passwords in stream URLs never reach a log.

May import :mod:`aip.errors`, :mod:`aip.results`, :mod:`aip.cache` and
:mod:`aip.vision`; never the pipeline, which drives these.
"""
