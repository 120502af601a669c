"""Finds the methods of ``lightning_modules`` without a list to edit: a new method is a file in the folder.

``lightning_modules/__init__.py`` calls ``register_methods`` on itself. Every module directly in the folder is
imported (the subpackages ``backbones``, ``captioning``, ``components`` export their classes themselves), and each
public ``LightningModule`` subclass a module defines is set on the package under its class name. Two things need
that, and nothing else does:

* a config's short ``class_path: MyMethod``: LightningCLI (jsonargparse) resolves a short name among the *imported*
  subclasses of ``LightningModule``, so the module must have been imported before the config is parsed;
* a checkpoint that names ``lightning_modules.MyMethod`` (the path LightningCLI records for a class the package
  exports) or a bare ``MyMethod``: ``lightning_modules.safe_load`` looks such names up on the package.

The dotted path (``class_path: lightning_modules.my_method.MyMethod``) works with or without it. A class of a package
outside the suite is named by its dotted path and allowed in checkpoints by ``VTR_EXTRA_CLASS_PACKAGES``
(``lightning_modules.safe_load``).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import lightning as L

__all__ = ["register_methods"]


def register_methods(package: ModuleType) -> list[str]:
    """Import every public module directly in ``package`` and export the ``LightningModule`` subclasses each defines
    under their class names (``package.__all__`` too); returns the names added, in module order.

    Two classes of one name in different modules would make a short ``class_path`` ambiguous (and a checkpoint's
    ``lightning_modules.<Name>`` name two classes), so that is an ImportError naming both files.
    """
    added: list[str] = []
    exported = package.__dict__.setdefault("__all__", [])
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        if info.ispkg or info.name.startswith("_"):  # jsonargparse skips classes under private modules too
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for name, cls in vars(module).items():
            if name.startswith("_") or not (inspect.isclass(cls) and cls.__module__ == module.__name__
                                            and issubclass(cls, L.LightningModule)):
                continue
            known = getattr(package, name, None)
            if known is cls:
                continue
            if known is not None:
                where = inspect.getfile(known) if inspect.isclass(known) or inspect.ismodule(known) else repr(known)
                raise ImportError(f"{package.__name__}: two things named {name}: {where} and "
                                  f"{inspect.getfile(cls)}; a config's short class_path could not tell them apart, "
                                  "so rename one of the classes")
            setattr(package, name, cls)
            if name not in exported:
                exported.append(name)
            added.append(name)
    return added
