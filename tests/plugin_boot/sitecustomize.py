"""Registers test plugins into fastgw.plugins.PLUGINS in every process of a test gateway.

conftest's `Gateway(plugins=[...])` puts this folder and tests/ on PYTHONPATH and names
the modules in TEST_GATEWAY_PLUGINS. Python imports `sitecustomize` when any interpreter
starts, so the registration happens in the master and in each worker: the workers are
started as `python -m fastgw.workers`, not forked, and would not inherit a registration
made in the master only. Each module is registered under its NAME.
"""

import importlib
import os

_names = os.environ.get("TEST_GATEWAY_PLUGINS", "")
if _names:
    from fastgw.plugins import PLUGINS

    for _name in _names.split(","):
        _module = importlib.import_module(_name)
        PLUGINS[_module.NAME] = _module
