"""Tools for working on this repository: never installed, never deployed.

``devtools.launch`` starts, waits for and stops the Firestore emulator and ``make run``
servers (the test suite, ``scripts/``, the bench); ``python -m devtools run|test`` is what
``make run`` and ``make test`` run. It lives beside ``session/`` rather than inside it so that
the package stays the library alone: ``pyproject.toml`` builds only ``session``, and
``.gcloudignore`` uploads only ``main.py``, ``requirements.txt`` and ``session/``.
"""
