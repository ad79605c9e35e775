"""The fleet seen at a glance: ``slotfleet dashboard`` (a web app) and ``slotfleet top``
(the same view in a terminal).

- ``views``: what every view shows, assembled from :class:`~slotfleet.app.App` reads into
  plain models (the JSON API serves them as they are; the pages and ``top`` render them).
- ``charts``: the throughput chart's geometry and the terminal's sparkline, pure.
- ``web`` (with ``pages``, ``api``, ``actions``): the Starlette application; ``server``
  runs it under uvicorn. ``terminal``: ``slotfleet top`` with rich.

What this package is not: a second client API. It reads and acts only through ``App``
(import-linter forbids it the store, the worker and the operator), so every action is the
verb the command line uses. The web stack (starlette, uvicorn, jinja2) and rich come with
the ``dashboard`` extra and are imported only by the modules that serve or draw; nothing
below the command line imports this package.
"""
