"""The live page (``streamcalc ui``): the graph, its values and the workers, in a browser.

Modules, one concern each: ``reader`` (what a refresh reads of Redis, each read
bounded), ``sampler`` (one sample of the namespace a second, kept for the
charts), ``app`` (the Starlette app: the page and the JSON under ``/api/``),
``server`` (uvicorn, until Ctrl-C). The page and its vendored libraries are in
``static/``; nothing is fetched from the internet.
"""
