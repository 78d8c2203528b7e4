"""``hydra.utils.instantiate`` that lets the user see the real error.

Hydra wraps any constructor error in an ``InstantiationException`` whose message buries the
original. Our constructors raise ``ValueError``s that already name the bad value and what is
allowed, so those are re-raised as they are (the Hydra context stays chained for debugging).
"""

from __future__ import annotations

from typing import Any

from hydra.errors import InstantiationException
from hydra.utils import instantiate

_USER_ERRORS = (ValueError, TypeError, FileNotFoundError, RuntimeError, KeyError)


def build(config: Any, *args: Any, **kwargs: Any) -> Any:
    try:
        return instantiate(config, *args, **kwargs)
    except InstantiationException as error:
        cause = error.__cause__
        if isinstance(cause, _USER_ERRORS):
            raise cause from error
        raise
