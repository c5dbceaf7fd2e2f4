"""The only code that touches a dependency's private names.

Each module wraps one dependency's internals in small functions, so a change in
a pinned version breaks here, and ``tests/test_compat.py`` (which runs every
adapter against the installed version) says which one. Nothing else in ``tui``
uses a dependency's private name. Import the module of the dependency you need:
``compat.textual`` and ``compat.textual_image`` belong to the UI process,
``compat.stable_diffusion_cpp`` to the image engine process, and none of them
imports a native binding or Textual beyond its own dependency.
"""
